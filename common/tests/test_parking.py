"""Parked events: a gap waits in parked_events (acked), is applied after its predecessor, or becomes a dead letter."""

from __future__ import annotations

import asyncio
import json
import uuid

from sqlalchemy import func, select

from busapp import Handled, Replica, replica_rows
from busapp import create_app as create_probe_app
from ticketing_common.db import DeadLetter, InboxRecord, ParkedEvent
from ticketing_common.events import TicketCreated, TicketUpdated
from ticketing_common.settings import ServiceSettings
from ticketing_testing import eventually, parked
from ticketing_testing.plugin import RunningService, ServiceStarter

CONSUMER = "probe-ticket-updated"


def created_event(title: str = "v0") -> TicketCreated:
    return TicketCreated(id=uuid.uuid4(), version=0, title=title, price=10, user_id=uuid.uuid4())


def updated_event(created: TicketCreated, version: int, title: str) -> TicketUpdated:
    return TicketUpdated(
        id=created.id, version=version, title=title, price=created.price, user_id=created.user_id, order_id=None
    )


async def publish(js, event, msg_id: str | None = None) -> None:
    await js.publish(event.subject, event.to_bytes(), headers={"Nats-Msg-Id": msg_id or str(event.event_id)})


async def parked_rows(service: RunningService) -> list[ParkedEvent]:
    async with service.sessionmaker() as session:
        return list((await session.execute(select(ParkedEvent))).scalars())


async def at_version(service: RunningService, version: int) -> bool:
    rows = await replica_rows(service)
    return len(rows) == 1 and rows[0].version == version


async def test_a_redelivered_parked_event_parks_nothing_new_and_is_applied_once(
    probe: RunningService, nats_client
) -> None:
    js = nats_client.jetstream()
    # A tiny duplicate window lets the same Nats-Msg-Id be stored twice, as a redelivery after a lost ack would be.
    await js.update_stream(name="TICKETS", subjects=["ticket.>"], duplicate_window=0.1)
    created = created_event()
    early = updated_event(created, 1, "v1")
    await publish(js, early)
    await parked(js, probe.runtime.database, "TICKETS", CONSUMER)
    await asyncio.sleep(0.2)
    await publish(js, early)
    await parked(js, probe.runtime.database, "TICKETS", CONSUMER)  # the copy was seen and acked too
    [row] = await parked_rows(probe)
    assert (row.message_id, row.entity, row.subject) == (str(early.event_id), str(created.id), "ticket.updated")
    assert json.loads(row.payload)["title"] == "v1"
    async with probe.sessionmaker() as session:  # the inbox holds what was applied, and nothing was
        assert await session.scalar(select(func.count()).select_from(InboxRecord)) == 0

    await publish(js, created)
    await eventually(lambda: at_version(probe, 1))
    assert await parked_rows(probe) == []
    async with probe.sessionmaker() as session:
        handled = await session.get(Handled, f"{created.id}:1")
        inbox = set((await session.execute(select(InboxRecord.message_id))).scalars())
    assert handled is not None and handled.count == 1  # applied once, its rolled-back tries not counted
    assert inbox == {str(created.event_id), str(early.event_id)}


async def test_a_predecessor_applied_elsewhere_is_found_by_the_periodic_retry(
    probe: RunningService, nats_client
) -> None:
    """Another replica (or a transaction that committed while the gap was being parked) applied the predecessor,
    and nothing here was told: the periodic retry applies the parked event on its own."""
    js = nats_client.jetstream()
    created = created_event()
    await publish(js, updated_event(created, 1, "v1"))
    await parked(js, probe.runtime.database, "TICKETS", CONSUMER)
    async with probe.sessionmaker() as session, session.begin():
        session.add(Replica(id=created.id, title="v0 from elsewhere", version=0))
    await eventually(lambda: at_version(probe, 1), timeout=10)
    [row] = await replica_rows(probe)
    assert row.title == "v1"
    assert await parked_rows(probe) == []


async def test_a_parked_event_whose_predecessor_never_comes_becomes_a_dead_letter(
    start_service: ServiceStarter, nats_client
) -> None:
    probe = await start_service(create_probe_app, ServiceSettings, "busapp", parked_max_age_seconds=1)
    js = nats_client.jetstream()
    orphan = updated_event(created_event(), 3, "v3 of a ticket never created")
    await js.publish(
        orphan.subject,
        orphan.to_bytes(),
        headers={"Nats-Msg-Id": str(orphan.event_id), "X-Request-ID": "req-parked-1"},
    )
    await parked(js, probe.runtime.database, "TICKETS", CONSUMER)

    async def dead_lettered() -> list[DeadLetter]:
        async with probe.sessionmaker() as session:
            return list((await session.execute(select(DeadLetter))).scalars())

    [letter] = await eventually(dead_lettered, timeout=15)
    assert (letter.consumer, letter.subject, letter.message_id) == (CONSUMER, "ticket.updated", str(orphan.event_id))
    assert "arrived before version 0" in letter.reason and "its predecessor never arrived" in letter.reason
    assert json.loads(letter.payload)["title"] == "v3 of a ticket never created"
    assert letter.headers["X-Request-ID"] == "req-parked-1"
    assert letter.stream_sequence is not None and letter.resolved_at is None
    assert await parked_rows(probe) == []
    assert await replica_rows(probe) == []
    async with probe.sessionmaker() as session:  # a redelivery now would be a duplicate, as for any dead letter
        assert await session.get(InboxRecord, (CONSUMER, str(orphan.event_id))) is not None

    async def announced():
        try:
            return await js.get_last_msg("DEADLETTERS", f"deadletter.{CONSUMER}")
        except Exception as exc:  # not there yet
            raise AssertionError(str(exc)) from exc

    notice = json.loads((await eventually(announced, timeout=10)).data)
    assert (notice["consumer"], notice["messageId"]) == (CONSUMER, str(orphan.event_id))
