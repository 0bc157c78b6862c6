"""A burst of out-of-order events does not hold the line for the other entities on the same consumer."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

from nats.aio.client import Client as NATS

from ticketing_common.events import TicketUpdated
from ticketing_testing import eventually, parked
from ticketing_testing.plugin import RunningService

CONSUMER = "orders-ticket-updated"
BURST = 1000


async def test_1000_gap_events_do_not_hold_up_another_tickets_in_order_event(
    orders: RunningService, nats_client: NATS, seed_ticket, ticket_row
) -> None:
    """The chaos run's stall: 1,000 ticket.updated at version 5 for unknown tickets held orders-ticket-updated for
    six minutes, because every waiting gap counted against max_ack_pending (1000) until it was dead-lettered.

    Parked, the gaps are acked and never come round again. The issue's figure is 1 s; alone on this machine the edit
    lands in well under a tenth of it. The test's deadline is 5 s: a timing belongs in bench/, and a full parallel
    `make test` on two shared cores can stretch anything. 5 s still tells "not held up" from the stall it guards
    against. The time it took is printed.
    """
    known = await seed_ticket()
    js = nats_client.jetstream()
    gaps = [
        TicketUpdated(id=uuid.uuid4(), version=5, title="gap", price=Decimal("1"), user_id=uuid.uuid4(), order_id=None)
        for _ in range(BURST)
    ]
    for start in range(0, BURST, 100):
        await asyncio.gather(
            *(
                js.publish(e.subject, e.to_bytes(), headers={"Nats-Msg-Id": str(e.event_id)})
                for e in gaps[start : start + 100]
            )
        )

    # Every gap seen, parked and acked: none is left with the consumer to be redelivered.
    assert await parked(js, orders.runtime.database, "TICKETS", CONSUMER, count=BURST, timeout=30) == BURST

    edit = TicketUpdated(
        id=known.id, version=1, title="edited during the burst", price=known.price, user_id=known.user_id, order_id=None
    )
    await js.publish(edit.subject, edit.to_bytes(), headers={"Nats-Msg-Id": str(edit.event_id)})
    published = time.monotonic()

    async def applied() -> bool:
        row = await ticket_row(known.id)
        return row is not None and row.version == 1 and row.title == "edited during the burst"

    await eventually(applied, timeout=5.0)
    print(f"\nthe in-order edit was applied {time.monotonic() - published:.2f}s after its publish, behind {BURST} gaps")
