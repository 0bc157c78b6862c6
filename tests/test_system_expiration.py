"""An unpaid order expires (window shortened to 3 s by configuration) and its ticket is free again."""

from __future__ import annotations

import pytest
from systemkit import Stack, eventually, needs, signup


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    return {"ORDER_EXPIRATION_SECONDS": "3", "NATS_ACK_WAIT_SECONDS": "5"}


@needs("tickets", "orders", "expiration")
def test_an_unpaid_order_expires_and_the_ticket_can_be_ordered_again(stack: Stack) -> None:
    seller, _ = signup(stack)
    buyer, _ = signup(stack)
    late_buyer, _ = signup(stack)
    ticket = seller.post("/api/tickets", json={"title": "Short window", "price": 10}).json()

    order = eventually(
        lambda: (r := buyer.post("/api/orders", json={"ticketId": ticket["id"]})).status_code == 201 and r
    )
    assert order.json()["status"] == "created"

    cancelled = eventually(
        lambda: buyer.get(f"/api/orders/{order.json()['id']}").json()["status"] == "cancelled", timeout=20
    )
    assert cancelled
    eventually(lambda: seller.get(f"/api/tickets/{ticket['id']}").json()["orderId"] is None)
    again = eventually(
        lambda: (r := late_buyer.post("/api/orders", json={"ticketId": ticket["id"]})).status_code == 201 and r
    )
    assert again.json()["ticket"]["id"] == ticket["id"]


@needs("tickets", "orders", "expiration", "payments")
def test_an_expired_order_cannot_be_paid(stack: Stack) -> None:
    seller, _ = signup(stack)
    buyer, _ = signup(stack)
    ticket = seller.post("/api/tickets", json={"title": "Too late", "price": 10}).json()
    order = eventually(
        lambda: (r := buyer.post("/api/orders", json={"ticketId": ticket["id"]})).status_code == 201 and r
    )
    order_id = order.json()["id"]
    eventually(lambda: buyer.get(f"/api/orders/{order_id}").json()["status"] == "cancelled", timeout=20)

    def pay_refused() -> bool:
        response = buyer.post("/api/payments", json={"token": "tok_visa", "orderId": order_id})
        return response.status_code == 400

    assert eventually(pay_refused)
    assert buyer.get(f"/api/orders/{order_id}").json()["status"] == "cancelled"
