"""Issue 15 #9: an event's Nats-Msg-Id and X-Request-ID are checked as the HTTP edge checks X-Request-ID.

An id too long for the inbox or the dead-letter table (or with bytes no log should carry) is never trusted, and
an event is never dropped without a record.
"""

from __future__ import annotations

import hashlib
import re
import uuid

from sqlalchemy import func, select

from busapp import Replica, TicketCreatedListener
from ticketing_common.db import DeadLetter
from ticketing_common.events import TicketCreated
from ticketing_testing import eventually
from ticketing_testing.plugin import RunningService


def ticket_created() -> TicketCreated:
    return TicketCreated(id=uuid.uuid4(), version=0, title="t", price=10, user_id=uuid.uuid4())


async def replicas(service: RunningService) -> int:
    async with service.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(Replica))).scalar_one())


async def dead_letters(service: RunningService) -> list[DeadLetter]:
    async with service.sessionmaker() as session:
        return list((await session.execute(select(DeadLetter).order_by(DeadLetter.id))).scalars())


async def test_an_overlong_message_id_is_dead_lettered_at_once_under_a_digest(probe: RunningService, nats_client):
    js = nats_client.jetstream()
    hostile = "x" * 300
    forged = ticket_created()
    await js.publish(forged.subject, forged.to_bytes(), headers={"Nats-Msg-Id": hostile, "X-Request-ID": "y" * 500})
    good = ticket_created()
    await js.publish(good.subject, good.to_bytes(), headers={"Nats-Msg-Id": str(good.event_id)})
    [letter] = await eventually(lambda: dead_letters(probe), timeout=20)
    assert letter.message_id == "invalid:" + hashlib.sha256(hostile.encode()).hexdigest()
    assert letter.deliveries == 1
    assert letter.reason.startswith("invalid Nats-Msg-Id header")
    assert letter.consumer == "probe-ticket-created"
    # What an operator needs to see it is kept, bounded.
    assert all(len(value) <= 256 for value in letter.headers.values())

    # The forged event was not applied under an id nobody can deduplicate; the next one was.
    async def only_the_good_one() -> bool:
        return await replicas(probe) == 1

    await eventually(only_the_good_one)


async def test_a_hostile_request_id_is_replaced_as_at_the_http_edge(probe: RunningService, nats_client):
    js = nats_client.jetstream()
    listener = next(li for li in probe.runtime.listeners if isinstance(li, TicketCreatedListener))
    for hostile in ("r" * 300, "two words", "caf\u00e9"):
        event = ticket_created()
        await js.publish(
            event.subject, event.to_bytes(), headers={"Nats-Msg-Id": str(event.event_id), "X-Request-ID": hostile}
        )

    async def all_applied() -> bool:
        return await replicas(probe) == 3

    await eventually(all_applied, timeout=20)
    assert len(listener.request_ids) == 3
    assert all(rid and re.fullmatch(r"[A-Za-z0-9._:/+=-]{1,128}", rid) for rid in listener.request_ids)
    assert await dead_letters(probe) == []
