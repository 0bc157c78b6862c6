"""Replicas end the same whatever order the broker delivers events in, and however often.

Each test feeds one set of events to a replica-keeping service twice: first in order, to a fresh state; then, after
emptying its tables, shuffled with 20% of them published a second time under a new Nats-Msg-Id (so neither
JetStream's duplicate window nor the inbox can drop them, and only the version rules protect the replica). The replica
rows must be the same both times, and must be what the events say. The seed is fixed and printed.

- orders keeps a replica of tickets from ticket.created / ticket.updated (versions 0..n per ticket).
- tickets keeps which live order reserves each of its tickets, and payments a replica of orders, both from
  order.created / order.cancelled. Tickets documents its reservation as order-independent (the newest live order
  holds the ticket) but not the ticket versions it bumps on the way, so those are left out of the comparison.

The two groups run in separate tests: tickets republishes reservations as ticket.updated, which orders would consume.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from prometheus_client import REGISTRY
from sqlalchemy import func, insert, select

from ticketing_common.db import DeadLetter
from ticketing_common.events import (
    Event,
    OrderCancelled,
    OrderCreated,
    OrderStatus,
    OrderTicket,
    TicketCreated,
    TicketRef,
    TicketUpdated,
)
from ticketing_orders import app as orders_app
from ticketing_orders import models as orders_models
from ticketing_orders import settings as orders_settings
from ticketing_payments import app as payments_app
from ticketing_payments import models as payments_models
from ticketing_payments import settings as payments_settings
from ticketing_testing import eventually
from ticketing_testing.plugin import RunningService, ServiceStarter, truncate_all
from ticketing_tickets import app as tickets_app
from ticketing_tickets import models as tickets_models
from ticketing_tickets import settings as tickets_settings

SEED = 20_240_607
TICKETS = 100
TICKET_VERSIONS = 5  # ticket.created and four ticket.updated: 500 ticket events
ORDER_EVENTS = 500
DUPLICATE_SHARE = 0.2
SETTLE_TIMEOUT = 90.0
EVENTS_METRIC = "ticketing_events_handled_total"


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128))


@dataclass(frozen=True)
class Delivery:
    """One publish: the event and the Nats-Msg-Id it goes out under."""

    event: Event
    message_id: str


def in_order(events: Sequence[Event]) -> list[Delivery]:
    return [Delivery(event, str(event.event_id)) for event in events]


def shuffled_with_duplicates(events: Sequence[Event], rng: random.Random) -> list[Delivery]:
    """Every event once, plus DUPLICATE_SHARE of them again, all in random order and each under a fresh message id.

    Fresh ids throughout: the in-order run already used the events' own ids inside JetStream's duplicate window.
    """
    again = rng.sample(list(events), round(len(events) * DUPLICATE_SHARE))
    deliveries = [Delivery(event, str(_uuid(rng))) for event in [*events, *again]]
    rng.shuffle(deliveries)
    return deliveries


async def publish_all(js: JetStreamContext, deliveries: Sequence[Delivery]) -> None:
    """Publish asynchronously and wait for every PubAck; JetStream must have stored them all (no id was reused)."""
    futures = [
        await js.publish_async(d.event.subject, d.event.to_bytes(), headers={"Nats-Msg-Id": d.message_id})
        for d in deliveries
    ]
    acks = await asyncio.gather(*futures)
    assert not any(ack.duplicate for ack in acks)


async def settled(services: Sequence[RunningService]) -> None:
    """Wait until every listener of these services has acked everything and nothing waits parked."""

    async def drained() -> bool:
        for service in services:
            for listener in service.runtime.listeners:
                info = await service.runtime.bus.js.consumer_info(listener.stream, listener.durable)
                if info.num_pending or info.num_ack_pending:
                    return False
            if await service.runtime.database.pool.fetchval("SELECT count(*) FROM parked_events"):
                return False
        return True

    await eventually(drained, timeout=SETTLE_TIMEOUT, interval=0.1)
    for service in services:
        async with service.sessionmaker() as session:
            dead = await session.scalar(select(func.count()).select_from(DeadLetter))
        assert dead == 0, "an event was dead-lettered: the version rules should have placed it"


def parked(services: Sequence[RunningService]) -> int:
    """How many events these services' listeners parked until their predecessor (a version gap), so far."""
    return sum(
        int(REGISTRY.get_sample_value(EVENTS_METRIC, {"consumer": listener.durable, "outcome": "parked"}) or 0)
        for service in services
        for listener in service.runtime.listeners
    )


async def reset(services: Sequence[RunningService]) -> None:
    """Empty the services' tables (replicas, inbox, outbox) while they keep running on the same consumers."""
    await asyncio.gather(*(truncate_all(service.settings.database_url) for service in services))


def rows(result: Any) -> list[tuple[Any, ...]]:
    return sorted(tuple(row) for row in result)


# --- orders: the tickets replica ---


def ticket_history(rng: random.Random) -> tuple[list[Event], dict[uuid.UUID, tuple[Any, ...]]]:
    """TICKETS tickets, each created and updated to version TICKET_VERSIONS - 1; and each one's final row."""
    events: list[Event] = []
    final: dict[uuid.UUID, tuple[Any, ...]] = {}
    for number in range(TICKETS):
        ticket_id, seller = _uuid(rng), _uuid(rng)
        state: tuple[Any, ...] = ()
        for version in range(TICKET_VERSIONS):
            title = f"Ticket {number} v{version}"
            price = Decimal(rng.randrange(100, 100_000)) / 100
            if version == 0:
                events.append(TicketCreated(id=ticket_id, version=0, title=title, price=price, user_id=seller))
                order_id = None
            else:
                order_id = _uuid(rng) if rng.random() < 0.5 else None
                events.append(
                    TicketUpdated(
                        id=ticket_id, version=version, title=title, price=price, user_id=seller, order_id=order_id
                    )
                )
            state = (ticket_id, version, title, price, order_id)
        final[ticket_id] = state
    return events, final


async def orders_replica(orders: RunningService) -> list[tuple[Any, ...]]:
    table = orders_models.Ticket
    async with orders.sessionmaker() as session:
        result = await session.execute(select(table.id, table.version, table.title, table.price, table.order_id))
        return rows(result)


async def test_orders_ticket_replica_ends_the_same_from_shuffled_and_duplicated_ticket_events(
    start_service: ServiceStarter,
    nats_client: NATS,
) -> None:
    rng = random.Random(SEED)
    print(f"\nshuffle seed {SEED}")
    events, final = ticket_history(rng)
    orders = await start_service(orders_app.create_app, orders_settings.Settings, "ticketing_orders")
    js = nats_client.jetstream()  # the operator: orders itself may not publish ticket events

    await publish_all(js, in_order(events))
    await settled([orders])
    expected = await orders_replica(orders)
    assert expected == sorted(final.values())

    await reset([orders])
    deliveries = shuffled_with_duplicates(events, rng)
    before = parked([orders])
    await publish_all(js, deliveries)
    await settled([orders])

    assert await orders_replica(orders) == expected
    waited = parked([orders]) - before
    print(
        f"orders: {len(events)} ticket events in order, then {len(deliveries)} shuffled with duplicates ({waited} parked)"
    )
    # The shuffle did put versions ahead of their predecessors, and the version rule held them back.
    assert waited > 0


# --- tickets and payments: reservations and the orders replica ---


@dataclass(frozen=True)
class SeedTicket:
    """A ticket the tickets service owns before any order event arrives."""

    id: uuid.UUID
    title: str
    price: Decimal
    user_id: uuid.UUID


def order_history(
    rng: random.Random,
) -> tuple[list[SeedTicket], list[Event], dict[uuid.UUID, uuid.UUID | None], list[tuple[Any, ...]]]:
    """Tickets with orders one after another, each cancelled before the next (the last maybe not): ORDER_EVENTS events.

    Returns the tickets, the events, the order expected to hold each ticket at the end, and payments' expected rows.
    """
    seeds: list[SeedTicket] = []
    events: list[Event] = []
    holders: dict[uuid.UUID, uuid.UUID | None] = {}
    replica: list[tuple[Any, ...]] = []
    start = datetime(2030, 1, 1, tzinfo=UTC)
    while len(events) < ORDER_EVENTS:
        ticket = SeedTicket(_uuid(rng), f"Ticket {len(seeds)}", Decimal(rng.randrange(100, 100_000)) / 100, _uuid(rng))
        seeds.append(ticket)
        count = rng.choice((1, 2, 3))
        holders[ticket.id] = None
        for index in range(count):
            order_id, buyer = _uuid(rng), _uuid(rng)
            expires_at = start + timedelta(minutes=index)  # a later order expires later
            events.append(
                OrderCreated(
                    id=order_id,
                    version=0,
                    status=OrderStatus.CREATED,
                    user_id=buyer,
                    expires_at=expires_at,
                    ticket=OrderTicket(id=ticket.id, price=ticket.price),
                )
            )
            if index == count - 1 and rng.random() < 0.6:
                holders[ticket.id] = order_id
                replica.append((order_id, 0, buyer, ticket.price, OrderStatus.CREATED.value, expires_at))
            else:
                events.append(OrderCancelled(id=order_id, version=1, ticket=TicketRef(id=ticket.id)))
                replica.append((order_id, 1, buyer, ticket.price, OrderStatus.CANCELLED.value, expires_at))
    return seeds, events, holders, sorted(replica)


async def seed_tickets(tickets: RunningService, seeds: Sequence[SeedTicket]) -> None:
    async with tickets.sessionmaker() as session, session.begin():
        await session.execute(
            insert(tickets_models.tickets),
            [{"id": s.id, "title": s.title, "price": s.price, "user_id": s.user_id, "version": 0} for s in seeds],
        )


async def reservations(tickets: RunningService) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Each ticket's public fields but its version, and the order versions tickets recorded."""
    t, o = tickets_models.tickets.c, tickets_models.order_versions.c
    async with tickets.sessionmaker() as session:
        held = rows(await session.execute(select(t.id, t.title, t.price, t.user_id, t.order_id)))
        recorded = rows(await session.execute(select(o.order_id, o.ticket_id, o.version, o.expires_at, o.cancelled)))
    return held, recorded


async def payments_replica(payments: RunningService) -> list[tuple[Any, ...]]:
    table = payments_models.Order
    async with payments.sessionmaker() as session:
        result = await session.execute(
            select(table.id, table.version, table.user_id, table.price, table.status, table.expires_at)
        )
        return rows(result)


async def test_tickets_reservations_and_payments_orders_end_the_same_from_shuffled_and_duplicated_order_events(
    start_service: ServiceStarter,
    nats_client: NATS,
) -> None:
    rng = random.Random(SEED + 1)
    print(f"\nshuffle seed {SEED + 1}")
    seeds, events, holders, expected_payments = order_history(rng)
    tickets = await start_service(tickets_app.create_app, tickets_settings.Settings, "ticketing_tickets")
    payments = await start_service(payments_app.create_app, payments_settings.Settings, "ticketing_payments")
    services = [tickets, payments]
    js = nats_client.jetstream()  # the operator: tickets itself may not publish order events

    await seed_tickets(tickets, seeds)
    await publish_all(js, in_order(events))
    await settled(services)
    expected_tickets, expected_orders = await reservations(tickets)
    assert {row[0]: row[4] for row in expected_tickets} == holders
    assert len(expected_orders) == len(expected_payments)
    assert await payments_replica(payments) == expected_payments

    await reset(services)
    await seed_tickets(tickets, seeds)
    deliveries = shuffled_with_duplicates(events, rng)
    before = parked(services)
    await publish_all(js, deliveries)
    await settled(services)

    assert await reservations(tickets) == (expected_tickets, expected_orders)
    assert await payments_replica(payments) == expected_payments
    waited = parked(services) - before
    print(
        f"tickets+payments: {len(events)} order events in order, then {len(deliveries)} shuffled with duplicates "
        f"({waited} parked)"
    )
    assert waited > 0
