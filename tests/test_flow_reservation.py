"""Tickets and orders together on the real broker: a reservation, its refusal to edit, and its release."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import text

import ticketing_orders.app as orders_app
import ticketing_orders.settings as orders_settings
import ticketing_payments.app as payments_app
import ticketing_payments.settings as payments_settings
import ticketing_tickets.app as tickets_app
import ticketing_tickets.settings as tickets_settings
from ticketing_testing import EventCapture, eventually, make_user
from ticketing_testing.plugin import RunningService, ServiceStarter
from ticketing_tickets.listeners import OrderCreatedListener


@pytest.fixture
async def stack(start_service: ServiceStarter) -> tuple[RunningService, RunningService]:
    tickets = await start_service(tickets_app.create_app, tickets_settings.Settings, "ticketing_tickets")
    orders = await start_service(orders_app.create_app, orders_settings.Settings, "ticketing_orders")
    return tickets, orders


async def test_a_ticket_is_reserved_by_an_order_and_freed_by_its_cancellation(stack) -> None:
    tickets, orders = stack
    seller, buyer, other_buyer = make_user(), make_user(), make_user()

    created = await tickets.client.post(
        "/api/tickets", json={"title": "Concert", "price": 25.5}, headers=seller.headers
    )
    assert created.status_code == 201
    ticket = created.json()

    async def order_ticket(user) -> dict:
        response = await orders.client.post("/api/orders", json={"ticketId": ticket["id"]}, headers=user.headers)
        assert response.status_code == 201, response.text
        return response.json()

    # orders learns about the ticket from ticket.created alone.
    order = await eventually(lambda: order_ticket(buyer), timeout=15)
    assert order["ticket"]["id"] == ticket["id"]
    assert order["ticket"]["price"] == 25.5

    async def reserved_in_tickets() -> dict:
        shown = (await tickets.client.get(f"/api/tickets/{ticket['id']}")).json()
        assert shown["orderId"] == order["id"]
        return shown

    shown = await eventually(reserved_in_tickets, timeout=15)
    assert shown["version"] == 1

    refused = await tickets.client.put(
        f"/api/tickets/{ticket['id']}", json={"title": "Concert", "price": 30}, headers=seller.headers
    )
    assert refused.status_code == 400
    assert refused.json() == {"errors": [{"message": "Cannot edit a reserved ticket"}]}

    listed = (await tickets.client.get("/api/tickets")).json()
    assert ticket["id"] not in {t["id"] for t in listed}

    second = await orders.client.post("/api/orders", json={"ticketId": ticket["id"]}, headers=other_buyer.headers)
    assert second.status_code == 400
    assert second.json() == {"errors": [{"message": "Ticket is already reserved"}]}

    cancelled = await orders.client.delete(f"/api/orders/{order['id']}", headers=buyer.headers)
    assert cancelled.status_code == 204

    async def freed_in_tickets() -> dict:
        shown = (await tickets.client.get(f"/api/tickets/{ticket['id']}")).json()
        assert shown["orderId"] is None
        return shown

    freed = await eventually(freed_in_tickets, timeout=15)
    assert freed["version"] == 2

    edited = await tickets.client.put(
        f"/api/tickets/{ticket['id']}", json={"title": "Concert (moved)", "price": 30}, headers=seller.headers
    )
    assert edited.status_code == 200
    assert edited.json()["version"] == 3

    # orders applies ticket.updated v1, v2, v3 in order; then the ticket can be ordered again at its new price.
    async def replica_at_v3() -> bool:
        async with orders.sessionmaker() as session:
            version = await session.scalar(
                text("SELECT version FROM tickets WHERE id = :id"), {"id": uuid.UUID(ticket["id"])}
            )
        return version == 3

    await eventually(replica_at_v3, timeout=15)
    again = await order_ticket(other_buyer)
    assert again["ticket"] == {"id": ticket["id"], "title": "Concert (moved)", "price": 30, "version": 3}


async def test_an_edit_racing_an_order_is_refused_and_the_order_is_charged_the_price_it_was_placed_at(
    start_service: ServiceStarter, events: EventCapture
) -> None:
    """Issue 15 #3: POST /api/orders and the seller's PUT at the same moment. The order wins; the edit is refused
    while tickets has not yet applied the order (503, retry), then as reserved; payments charges the order's price."""
    tickets, orders = (
        await start_service(tickets_app.create_app, tickets_settings.Settings, "ticketing_tickets"),
        await start_service(orders_app.create_app, orders_settings.Settings, "ticketing_orders"),
    )
    payments = await start_service(payments_app.create_app, payments_settings.Settings, "ticketing_payments")
    seller, buyer = make_user(), make_user()
    ticket = (
        await tickets.client.post("/api/tickets", json={"title": "Gig", "price": 10}, headers=seller.headers)
    ).json()
    url = f"/api/tickets/{ticket['id']}"

    async def ordered():
        response = await orders.client.post("/api/orders", json={"ticketId": ticket["id"]}, headers=buyer.headers)
        assert response.status_code == 201, response.text
        return response.json()

    # The race's moment, held open: the order is placed and on the bus, and tickets has not applied it yet.
    [listener] = [li for li in tickets.runtime.listeners if isinstance(li, OrderCreatedListener)]
    await listener.stop()
    order = await eventually(ordered, timeout=15)
    await events.wait_for("order.created")
    edit = await tickets.client.put(url, json={"title": "Gig", "price": 999}, headers=seller.headers)
    assert edit.status_code == 503, edit.text
    assert edit.headers["Retry-After"] == "1"

    async def paid() -> bool:
        answer = await payments.client.post(
            "/api/payments", json={"token": "tok_visa", "orderId": order["id"]}, headers=buyer.headers
        )
        return answer.status_code == 201

    await eventually(paid, timeout=15)
    async with payments.sessionmaker() as session:
        charged = await session.scalar(
            text("SELECT amount FROM payments WHERE order_id = :id"), {"id": uuid.UUID(order["id"])}
        )
    shown = (await orders.client.get(f"/api/orders/{order['id']}", headers=buyer.headers)).json()
    assert shown["ticket"]["price"] == order["ticket"]["price"] == 10
    assert charged == Decimal(10)

    await listener.start()

    async def refused_as_reserved() -> bool:
        answer = await tickets.client.put(url, json={"title": "Gig", "price": 999}, headers=seller.headers)
        assert answer.status_code != 200, answer.text
        return answer.status_code == 400 and answer.json() == {"errors": [{"message": "Cannot edit a reserved ticket"}]}

    await eventually(refused_as_reserved, timeout=listener.effective_ack_wait + 10)
    final = (await tickets.client.get(url)).json()
    assert (final["price"], final["orderId"], final["version"]) == (10, order["id"], 1)
    reservation = await events.wait_for("ticket.updated")
    assert [(e["version"], e["price"], e["orderId"]) for e in reservation] == [(1, 10, order["id"])]


async def test_a_ticket_whose_event_is_still_in_the_tickets_outbox_is_not_yet_known_to_orders_never_404(
    stack,
) -> None:
    """The outbox gap: tickets has committed the ticket, its relay has not published ticket.created (as while it is
    killed, or NATS restarts), so orders' consumer is caught up with the stream. The ticket exists: 503, not 404."""
    tickets, orders = stack
    seller, buyer = make_user(), make_user()
    await tickets.runtime.relay.stop()
    created = await tickets.client.post("/api/tickets", json={"title": "Gap", "price": 12}, headers=seller.headers)
    assert created.status_code == 201
    ticket_id = created.json()["id"]

    response = await orders.client.post("/api/orders", json={"ticketId": ticket_id}, headers=buyer.headers)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    assert response.json() == {"errors": [{"message": "Not yet known; retry shortly"}]}

    assert await tickets.runtime.relay.publish_pending() == 1  # the relay is back: the event reaches the stream

    async def ordered() -> dict:
        answer = await orders.client.post("/api/orders", json={"ticketId": ticket_id}, headers=buyer.headers)
        assert answer.status_code == 201, answer.text
        return answer.json()

    await eventually(ordered, timeout=15)
