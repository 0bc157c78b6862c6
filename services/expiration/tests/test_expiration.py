"""The expiration service: jobs from order events, fired once on time, across restarts and replicas."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from sqlalchemy import func, select

from ticketing_common.db import InboxRecord, OutboxEvent
from ticketing_common.events import Event, OrderCancelled, OrderCreated, OrderStatus, OrderTicket, TicketRef
from ticketing_expiration import service
from ticketing_expiration.models import ExpirationJob
from ticketing_expiration.scheduler import ExpirationScheduler
from ticketing_testing import EventCapture, eventually
from ticketing_testing.plugin import RunningService

COMPLETE = "expiration.complete"


def order_created(*, expires_in: float) -> OrderCreated:
    """An order.created (version 0) whose reservation ends `expires_in` seconds from now."""
    return OrderCreated(
        id=uuid.uuid4(),
        version=0,
        status=OrderStatus.CREATED,
        user_id=uuid.uuid4(),
        expires_at=datetime.now(UTC) + timedelta(seconds=expires_in),
        ticket=OrderTicket(id=uuid.uuid4(), price=Decimal("20.00")),
    )


def order_cancelled(order: OrderCreated) -> OrderCancelled:
    """The order.cancelled (version 1) of an order."""
    return OrderCancelled(id=order.id, version=1, ticket=TicketRef(id=order.ticket.id))


async def publish(nc: NATS, event: Event, *, msg_id: str | None = None) -> None:
    """Publish as the orders relay would: Nats-Msg-Id is the event id unless another is given."""
    await nc.jetstream().publish(
        event.subject, event.to_bytes(), headers={"Nats-Msg-Id": msg_id or str(event.event_id)}
    )


async def job_of(app: RunningService, order_id: uuid.UUID) -> ExpirationJob | None:
    """The order's job row, read fresh."""
    async with app.sessionmaker() as session:
        return (
            await session.execute(select(ExpirationJob).where(ExpirationJob.order_id == order_id))
        ).scalar_one_or_none()


async def stored(app: RunningService, order_id: uuid.UUID) -> ExpirationJob:
    """Wait until the order's job row exists."""

    async def check() -> ExpirationJob | None:
        return await job_of(app, order_id)

    return await eventually(check)


async def handled(app: RunningService, consumer: str, count: int) -> None:
    """Wait until a consumer has recorded `count` messages in the inbox."""

    async def check() -> bool:
        async with app.sessionmaker() as session:
            seen = await session.scalar(
                select(func.count()).select_from(InboxRecord).where(InboxRecord.consumer == consumer)
            )
        return seen == count

    await eventually(check)


def fired_for(events: EventCapture, order_id: uuid.UUID) -> int:
    """How many expiration.complete events named the order."""
    return sum(1 for body in events.of(COMPLETE) if body == {"orderId": str(order_id)})


async def test_fires_expiration_complete_once_the_order_expires_and_not_before(
    expiration: RunningService, nats_client: NATS, events: EventCapture
) -> None:
    order = order_created(expires_in=0.5)
    seen_at: list[float] = []

    async def on_complete(msg: Msg) -> None:
        seen_at.append(time.time())

    await nats_client.subscribe(COMPLETE, cb=on_complete)
    await publish(nats_client, order)

    assert await events.wait_for(COMPLETE) == [{"orderId": str(order.id)}]
    await eventually(lambda: asyncio.sleep(0, bool(seen_at)))
    assert seen_at[0] >= order.expires_at.timestamp()
    job = await job_of(expiration, order.id)
    assert job is not None
    assert job.fired_at is not None
    assert job.fired_at >= order.expires_at


async def test_a_sooner_job_wakes_a_scheduler_sleeping_on_a_later_one(
    start_replica, nats_client: NATS, events: EventCapture
) -> None:
    await start_replica(expiration_poll_seconds=30)
    later = order_created(expires_in=120)
    await publish(nats_client, later)
    await asyncio.sleep(0.3)  # let the scheduler settle into its sleep on the later job
    sooner = order_created(expires_in=0.3)
    await publish(nats_client, sooner)
    # Well inside the 30 s safety-net poll: only a wake-up fires it this soon.
    assert await events.wait_for(COMPLETE, timeout=10) == [{"orderId": str(sooner.id)}]


async def test_a_job_committed_elsewhere_wakes_the_scheduler_through_notify(
    start_replica, events: EventCapture
) -> None:
    app = await start_replica(expiration_poll_seconds=30)
    await asyncio.sleep(0.3)  # the scheduler is asleep on its 30 s poll
    order_id = uuid.uuid4()
    # Written straight to the database, as another replica's listener would: no in-process wake-up happens.
    async with app.runtime.database.transaction() as uow:
        await service.schedule_expiration(
            uow=uow, order_id=order_id, version=0, expires_at=datetime.now(UTC) + timedelta(seconds=0.3)
        )
    assert await events.wait_for(COMPLETE, timeout=10) == [{"orderId": str(order_id)}]


async def test_jobs_that_fell_due_while_the_service_was_down_fire_right_after_it_starts(
    start_replica, nats_client: NATS, events: EventCapture
) -> None:
    first = await start_replica(expiration_poll_seconds=30)
    order = order_created(expires_in=0.5)
    await publish(nats_client, order)
    await stored(first, order.id)
    await first.stop()
    first.stop = _already_stopped  # type: ignore[method-assign]

    remaining = order.expires_at.timestamp() - time.time()
    await asyncio.sleep(max(remaining, 0) + 0.3)
    assert events.of(COMPLETE) == []

    await start_replica(expiration_poll_seconds=30)
    assert await events.wait_for(COMPLETE, timeout=10) == [{"orderId": str(order.id)}]


def scheduler_of(app: RunningService) -> ExpirationScheduler:
    """The app's scheduler worker."""
    [scheduler] = [w for w in app.runtime.workers if isinstance(w, ExpirationScheduler)]
    return scheduler


async def _already_stopped() -> None:
    return None


async def test_two_replicas_fire_each_of_fifty_jobs_exactly_once(
    start_replica, nats_client: NATS, events: EventCapture
) -> None:
    one = await start_replica(nats_client_id="expiration-one")
    two = await start_replica(nats_client_id="expiration-two")
    orders = [order_created(expires_in=0.5 + i * 0.01) for i in range(50)]
    for order in orders:
        await publish(nats_client, order)

    await events.wait_for(COMPLETE, 50, timeout=20)

    async def all_published() -> bool:
        async with one.sessionmaker() as session:
            unsent = await session.scalar(
                select(func.count()).select_from(OutboxEvent).where(OutboxEvent.sent_at.is_(None))
            )
        return unsent == 0

    await eventually(all_published)
    await nats_client.flush()
    counts = Counter(body["orderId"] for body in events.of(COMPLETE))
    assert counts == Counter({str(order.id): 1 for order in orders})
    async with one.sessionmaker() as session:
        outbox = await session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.subject == COMPLETE)
        )
        fired = await session.scalar(
            select(func.count()).select_from(ExpirationJob).where(ExpirationJob.fired_at.is_not(None))
        )
    assert outbox == 50
    assert fired == 50
    # Each replica fired some of the jobs, and together exactly the fifty: none fired twice, by either replica.
    fired_by = [scheduler_of(app).fired_total for app in (one, two)]
    print(f"\nfired per replica: {fired_by}")
    assert all(n > 0 for n in fired_by), fired_by
    assert sum(fired_by) == 50, fired_by


async def test_a_duplicate_order_created_changes_nothing(
    expiration: RunningService, nats_client: NATS, events: EventCapture
) -> None:
    order = order_created(expires_in=0.5)
    await publish(nats_client, order)
    original = await stored(expiration, order.id)
    # The same order again under a new message id (so the inbox cannot drop it), claiming a later expiry.
    replay = order.model_copy(update={"expires_at": order.expires_at + timedelta(hours=1)})
    await publish(nats_client, replay, msg_id=str(uuid.uuid4()))
    await handled(expiration, "expiration-order-created", 2)

    job = await job_of(expiration, order.id)
    assert job is not None
    assert job.expires_at == original.expires_at
    # A later order proves the scheduler went past the order's due time (jobs fire in due order) before we count.
    due_in = (original.expires_at - datetime.now(UTC)).total_seconds()
    sentinel = order_created(expires_in=max(due_in, 0) + 0.3)
    await publish(nats_client, sentinel)
    await eventually(lambda: asyncio.sleep(0, fired_for(events, sentinel.id) == 1))
    assert fired_for(events, order.id) == 1


async def test_an_order_cancelled_drops_the_job_so_it_never_fires(
    expiration: RunningService, nats_client: NATS, events: EventCapture
) -> None:
    order = order_created(expires_in=0.5)
    await publish(nats_client, order)
    await stored(expiration, order.id)
    await publish(nats_client, order_cancelled(order))
    await handled(expiration, "expiration-order-cancelled", 1)
    # A later order proves the scheduler went past the cancelled one's due time (jobs fire in due order).
    sentinel = order_created(expires_in=0.8)
    await publish(nats_client, sentinel)

    assert await events.wait_for(COMPLETE) == [{"orderId": str(sentinel.id)}]
    job = await job_of(expiration, order.id)
    assert job is not None
    assert job.cancelled_at is not None
    assert job.fired_at is None
    assert fired_for(events, order.id) == 0


async def test_a_cancel_that_overtakes_its_create_means_the_order_never_fires(
    expiration: RunningService, nats_client: NATS, events: EventCapture
) -> None:
    order = order_created(expires_in=0.3)
    await publish(nats_client, order_cancelled(order))
    await handled(expiration, "expiration-order-cancelled", 1)
    await publish(nats_client, order)
    await handled(expiration, "expiration-order-created", 1)
    sentinel = order_created(expires_in=0.6)
    await publish(nats_client, sentinel)

    assert await events.wait_for(COMPLETE) == [{"orderId": str(sentinel.id)}]
    job = await job_of(expiration, order.id)
    assert job is not None
    assert (job.version, job.expires_at, job.fired_at) == (1, None, None)
    assert fired_for(events, order.id) == 0


async def test_an_old_cancel_replayed_changes_nothing(
    expiration: RunningService, nats_client: NATS, events: EventCapture
) -> None:
    order = order_created(expires_in=60)
    await publish(nats_client, order)
    await stored(expiration, order.id)
    cancel = order_cancelled(order)
    await publish(nats_client, cancel)
    await handled(expiration, "expiration-order-cancelled", 1)
    first = await job_of(expiration, order.id)
    await publish(nats_client, cancel, msg_id=str(uuid.uuid4()))
    await handled(expiration, "expiration-order-cancelled", 2)

    again = await job_of(expiration, order.id)
    assert first is not None
    assert again is not None
    assert (again.version, again.cancelled_at) == (first.version, first.cancelled_at)


async def test_serves_only_health_readiness_metrics_and_docs(expiration: RunningService) -> None:
    assert (await expiration.client.get("/healthz")).json() == {"status": "ok"}
    assert (await expiration.client.get("/readyz")).json() == {"status": "ready"}
    assert (await expiration.client.get("/metrics")).status_code == 200
    docs = await expiration.client.get("/api/expiration/openapi.json")
    assert docs.json()["paths"] == {}
    assert (await expiration.client.get("/api/expiration/jobs")).status_code == 404
