"""Concurrency across services on the real broker: one winner per ticket, no lost update, one charge per order.

Each test runs the services in-process (their lifespans on the test Postgres and NATS), lets them learn of each
other's entities only through events, then fires concurrent requests with asyncio.gather and checks invariants:
who won, what the databases hold, and which events were committed and published. No timings are asserted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from ticketing_common.db import OutboxEvent
from ticketing_orders import app as orders_app
from ticketing_orders import models as orders_models
from ticketing_orders import settings as orders_settings
from ticketing_payments import app as payments_app
from ticketing_payments import models as payments_models
from ticketing_payments import settings as payments_settings
from ticketing_payments.providers import FakeProvider
from ticketing_testing import EventCapture, TestUser, eventually, make_user
from ticketing_testing.plugin import RunningService, ServiceStarter
from ticketing_tickets import app as tickets_app
from ticketing_tickets import settings as tickets_settings

BUYERS = 100
EDITS = 50
PAYMENTS = 20
REPLICATION_TIMEOUT = 20.0


@pytest.fixture
async def tickets(start_service: ServiceStarter) -> RunningService:
    return await start_service(tickets_app.create_app, tickets_settings.Settings, "ticketing_tickets")


@pytest.fixture
async def orders(start_service: ServiceStarter, tickets: RunningService) -> RunningService:
    return await start_service(orders_app.create_app, orders_settings.Settings, "ticketing_orders")


@pytest.fixture
async def payments(start_service: ServiceStarter, orders: RunningService) -> RunningService:
    return await start_service(payments_app.create_app, payments_settings.Settings, "ticketing_payments")


async def create_ticket(tickets: RunningService, seller: TestUser, *, title: str = "Concert", price: float = 20) -> Any:
    response = await tickets.client.post("/api/tickets", json={"title": title, "price": price}, headers=seller.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def replicated_ticket(orders: RunningService, ticket_id: str, version: int = 0) -> orders_models.Ticket:
    """Wait until orders' replica holds the ticket at `version` (it learns tickets only from ticket.* events)."""

    async def held() -> orders_models.Ticket | None:
        async with orders.sessionmaker() as session:
            row = await session.get(orders_models.Ticket, uuid.UUID(ticket_id))
        return row if row is not None and row.version == version else None

    return await eventually(held, timeout=REPLICATION_TIMEOUT)


async def outbox_count(service: RunningService, subject: str) -> int:
    """Events of one subject the service committed (sent or not): the durable record of what it published."""
    async with service.sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.subject == subject)
        )
    return int(count or 0)


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(response.status_code for response in responses)


async def test_of_a_hundred_concurrent_orders_for_one_ticket_exactly_one_wins(
    tickets: RunningService, orders: RunningService, events: EventCapture
) -> None:
    ticket = await create_ticket(tickets, make_user())
    await replicated_ticket(orders, ticket["id"])
    buyers = [make_user() for _ in range(BUYERS)]

    responses = await asyncio.gather(
        *(orders.client.post("/api/orders", json={"ticketId": ticket["id"]}, headers=b.headers) for b in buyers)
    )

    assert statuses(responses) == {201: 1, 400: BUYERS - 1}
    [won] = [r.json() for r in responses if r.status_code == 201]
    assert all(
        r.json() == {"errors": [{"message": "Ticket is already reserved"}]} for r in responses if r.status_code == 400
    )
    assert won["ticket"]["id"] == ticket["id"]
    assert won["userId"] in {str(b.id) for b in buyers}
    async with orders.sessionmaker() as session:
        stored = (
            await session.execute(
                select(orders_models.Order.id, orders_models.Order.status).where(
                    orders_models.Order.ticket_id == uuid.UUID(ticket["id"])
                )
            )
        ).all()
    # The losers left nothing behind: one row, the winner's, and one order.created committed for it.
    assert [(str(row.id), row.status) for row in stored] == [(won["id"], "created")]
    assert await outbox_count(orders, "order.created") == 1

    async def reserved_in_tickets() -> bool:
        shown = (await tickets.client.get(f"/api/tickets/{ticket['id']}")).json()
        return shown["orderId"] == won["id"]

    # tickets hears of the winner (and only the winner) over the broker.
    assert await eventually(reserved_in_tickets, timeout=REPLICATION_TIMEOUT)
    published = events.of("order.created")
    assert [(e["id"], e["ticket"]["id"]) for e in published] == [(won["id"], ticket["id"])]


async def test_fifty_concurrent_edits_of_one_ticket_get_sequential_versions_and_lose_nothing(
    tickets: RunningService, orders: RunningService, events: EventCapture
) -> None:
    seller = make_user()
    ticket = await create_ticket(tickets, seller)
    url = f"/api/tickets/{ticket['id']}"

    responses = await asyncio.gather(
        *(
            tickets.client.put(url, json={"title": f"Edit {i}", "price": 10 + i}, headers=seller.headers)
            for i in range(EDITS)
        )
    )

    # Edits of an unreserved ticket queue on its row lock and all win (409 is only for an edit that found the ticket
    # reserved and then released: services/tickets/tests/test_concurrency.py forces that one).
    assert statuses(responses) == {200: EDITS}, [r.text for r in responses if r.status_code != 200]
    won = [r.json() for r in responses]
    # Every edit has its own version, and together they are exactly 1..50: nothing skipped, nothing shared.
    assert sorted(w["version"] for w in won) == list(range(1, EDITS + 1))
    last = max(won, key=lambda w: w["version"])
    final = (await tickets.client.get(url)).json()
    # The row holds the edit that got the last version: no lost update.
    assert final["version"] == EDITS
    assert (final["title"], final["price"]) == (last["title"], last["price"])

    # Each version was published exactly once, carrying what its request was told.
    assert await outbox_count(tickets, "ticket.updated") == EDITS
    published = [e for e in await events.wait_for("ticket.updated", EDITS) if e["id"] == ticket["id"]]
    assert sorted(e["version"] for e in published) == list(range(1, EDITS + 1))
    assert {(e["version"], e["title"], e["price"]) for e in published} == {
        (w["version"], w["title"], w["price"]) for w in won
    }
    print(f"\ntickets: {EDITS} concurrent edits, all won, versions 1..{EDITS}")

    # orders' replica, fed those events over the broker, ends on the same final version.
    replica = await replicated_ticket(orders, ticket["id"], version=EDITS)
    assert (replica.title, float(replica.price)) == (last["title"], last["price"])


async def test_of_twenty_concurrent_payments_for_one_order_exactly_one_charges(
    tickets: RunningService, orders: RunningService, payments: RunningService, events: EventCapture
) -> None:
    provider = payments.app.state.payment_provider
    assert isinstance(provider, FakeProvider)
    buyer = make_user()
    ticket = await create_ticket(tickets, make_user(), price=42.5)
    await replicated_ticket(orders, ticket["id"])
    placed = await orders.client.post("/api/orders", json={"ticketId": ticket["id"]}, headers=buyer.headers)
    assert placed.status_code == 201, placed.text
    order = placed.json()

    async def known_to_payments() -> payments_models.Order | None:
        async with payments.sessionmaker() as session:
            return await session.get(payments_models.Order, uuid.UUID(order["id"]))

    await eventually(known_to_payments, timeout=REPLICATION_TIMEOUT)

    body = {"token": "tok_visa", "orderId": order["id"]}
    responses = await asyncio.gather(
        *(payments.client.post("/api/payments", json=body, headers=buyer.headers) for _ in range(PAYMENTS))
    )

    assert statuses(responses) == {201: 1, 400: PAYMENTS - 1}, [r.text for r in responses]
    [paid] = [r.json() for r in responses if r.status_code == 201]
    assert all(r.json() == {"errors": [{"message": "Order already paid"}]} for r in responses if r.status_code == 400)
    # One charge at the provider, under the order's idempotency key, for the order's price.
    [charge] = provider.charges
    assert (charge.idempotency_key, float(charge.amount)) == (order["id"], 42.5)
    async with payments.sessionmaker() as session:
        stored = (
            await session.execute(
                select(payments_models.Payment.id, payments_models.Payment.stripe_id).where(
                    payments_models.Payment.order_id == uuid.UUID(order["id"])
                )
            )
        ).all()
    assert [(str(row.id), row.stripe_id) for row in stored] == [(paid["id"], charge.charge_id)]
    assert await outbox_count(payments, "payment.created") == 1

    async def completed() -> bool:
        shown = await orders.client.get(f"/api/orders/{order['id']}", headers=buyer.headers)
        return shown.json()["status"] == "complete"

    # orders completes the order from that one payment.created.
    assert await eventually(completed, timeout=REPLICATION_TIMEOUT)
    assert events.of("payment.created") == [{"id": paid["id"], "orderId": order["id"], "stripeId": charge.charge_id}]
    print(f"\npayments: {PAYMENTS} concurrent requests, {provider.calls} reached the provider, 1 charge")
