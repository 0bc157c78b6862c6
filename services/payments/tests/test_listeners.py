"""The order replica: order.created and order.cancelled through the real broker, in version order, once each."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from nats.aio.client import Client as NATS
from sqlalchemy import func, select

from ticketing_common.db import InboxRecord
from ticketing_common.events import (
    Event,
    OrderCancelled,
    OrderCreated,
    OrderStatus,
    OrderTicket,
    TicketRef,
    iso_z,
)
from ticketing_payments.models import Order
from ticketing_payments.providers import FakeProvider
from ticketing_testing import eventually, make_user, parked
from ticketing_testing.plugin import RunningService

CREATED = "payments-order-created"
CANCELLED = "payments-order-cancelled"


def order_created(*, user_id: uuid.UUID | None = None, price: str = "35.00") -> OrderCreated:
    """A fresh order.created (version 0) with unique ids."""
    return OrderCreated(
        id=uuid.uuid4(),
        version=0,
        status=OrderStatus.CREATED,
        user_id=user_id or uuid.uuid4(),
        expires_at=datetime.now(UTC) + timedelta(minutes=15),
        ticket=OrderTicket(id=uuid.uuid4(), price=Decimal(price)),
    )


def order_cancelled(order: OrderCreated) -> OrderCancelled:
    """The order's order.cancelled (version 1)."""
    return OrderCancelled(id=order.id, version=1, ticket=TicketRef(id=order.ticket.id))


async def publish(nc: NATS, event: Event, *, msg_id: str | None = None) -> None:
    """Publish as the orders relay would; a different msg_id makes a redelivery the inbox cannot recognise."""
    await nc.jetstream().publish(
        event.subject, event.to_bytes(), headers={"Nats-Msg-Id": msg_id or str(event.event_id)}
    )


async def replica(payments: RunningService, order_id: uuid.UUID) -> Order | None:
    async with payments.sessionmaker() as session:
        return await session.get(Order, order_id)


async def handled(payments: RunningService, consumer: str, count: int) -> None:
    """Wait until the consumer has recorded `count` messages as processed."""

    async def check() -> bool:
        async with payments.sessionmaker() as session:
            seen = await session.scalar(
                select(func.count()).select_from(InboxRecord).where(InboxRecord.consumer == consumer)
            )
        return seen == count

    await eventually(check)


async def test_order_created_adds_the_order_to_the_replica(payments: RunningService, nats_client: NATS) -> None:
    event = order_created(price="35.10")
    await publish(nats_client, event)

    async def arrived() -> Order | None:
        return await replica(payments, event.id)

    order = await eventually(arrived)
    assert (order.version, order.user_id, order.price, order.status) == (0, event.user_id, Decimal("35.10"), "created")
    assert iso_z(order.expires_at) == iso_z(event.expires_at)  # the wire carries milliseconds


async def test_a_duplicate_order_created_changes_nothing(payments: RunningService, nats_client: NATS) -> None:
    event = order_created(price="35.00")
    await publish(nats_client, event)
    await handled(payments, CREATED, 1)
    replay = event.model_copy(update={"ticket": OrderTicket(id=event.ticket.id, price=Decimal("1.00"))})
    await publish(nats_client, replay, msg_id=str(uuid.uuid4()))
    await handled(payments, CREATED, 2)

    order = await replica(payments, event.id)
    assert order is not None
    assert (order.version, order.price) == (0, Decimal("35.00"))


async def test_order_cancelled_cancels_the_replica_order_and_payment_is_refused(
    payments: RunningService, nats_client: NATS, fake_provider: FakeProvider
) -> None:
    user = make_user()
    event = order_created(user_id=user.id)
    await publish(nats_client, event)
    await publish(nats_client, order_cancelled(event))
    await handled(payments, CANCELLED, 1)

    order = await replica(payments, event.id)
    assert order is not None
    assert (order.version, order.status) == (1, "cancelled")
    response = await payments.client.post(
        "/api/payments", json={"token": "tok_visa", "orderId": str(event.id)}, headers=user.headers
    )
    assert response.json() == {"errors": [{"message": "Cannot pay for a cancelled order"}]}
    assert fake_provider.calls == 0


async def test_a_cancel_that_overtakes_its_create_waits_for_it(payments: RunningService, nats_client: NATS) -> None:
    event = order_created()
    await publish(nats_client, order_cancelled(event))
    # Not applied, not dropped: the cancel is parked (and acked) until its create. Looked at once it is parked.
    await parked(payments.runtime.bus.js, payments.runtime.database, "ORDERS", CANCELLED)
    async with payments.sessionmaker() as session:
        assert await session.get(Order, event.id) is None
        assert await session.scalar(select(func.count()).select_from(InboxRecord)) == 0  # the inbox: applied only

    await publish(nats_client, event)

    async def cancelled() -> bool:
        order = await replica(payments, event.id)
        return order is not None and (order.version, order.status) == (1, "cancelled")

    await eventually(cancelled)
    await handled(payments, CANCELLED, 1)


async def test_a_replayed_cancel_or_a_late_create_changes_nothing(payments: RunningService, nats_client: NATS) -> None:
    event = order_created()
    cancel = order_cancelled(event)
    await publish(nats_client, event)
    await publish(nats_client, cancel)
    await handled(payments, CANCELLED, 1)

    await publish(nats_client, cancel, msg_id=str(uuid.uuid4()))
    await publish(nats_client, event, msg_id=str(uuid.uuid4()))
    await handled(payments, CANCELLED, 2)
    await handled(payments, CREATED, 2)

    order = await replica(payments, event.id)
    assert order is not None
    assert (order.version, order.status) == (1, "cancelled")
