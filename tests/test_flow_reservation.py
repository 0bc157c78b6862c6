"""Tickets and orders together on the real broker: a reservation, its refusal to edit, and its release."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

import ticketing_orders.app as orders_app
import ticketing_orders.settings as orders_settings
import ticketing_tickets.app as tickets_app
import ticketing_tickets.settings as tickets_settings
from ticketing_testing import eventually, make_user
from ticketing_testing.plugin import RunningService, ServiceStarter


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
