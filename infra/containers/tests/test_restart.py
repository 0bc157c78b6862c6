"""A service container is SIGKILLed mid-flow; the engine restarts it as the pod's restartPolicy says, and nothing
is lost: the request that could not be served is served after the restart, and the events still flow."""

from __future__ import annotations

import httpx
from containerkit import Stack, eventually, signup


def test_a_sigkilled_service_comes_back_and_the_flow_completes(stack: Stack) -> None:
    seller, _ = signup(stack)
    buyer, _ = signup(stack)
    ticket = seller.post("/api/tickets", json={"title": "Crash course", "price": 15}).json()

    orders = stack.container("orders-depl")
    before = stack.sigkill(orders)
    eventually(lambda: stack.restart_count(orders) > before, timeout=60)

    def placed() -> httpx.Response | None:
        # 502/503 while the container restarts (the gateway cannot reach it, or its consumer catches up).
        response = buyer.post("/api/orders", json={"ticketId": ticket["id"]})
        assert response.status_code in (201, 404, 502, 503), response.text
        return response if response.status_code == 201 else None

    order = eventually(placed, timeout=120).json()
    # order.created reached tickets after the restart, and the ticket is reserved for exactly this order.
    eventually(lambda: seller.get(f"/api/tickets/{ticket['id']}").json()["orderId"] == order["id"], timeout=60)

    tickets = stack.container("tickets-depl")
    before = stack.sigkill(tickets)
    eventually(lambda: stack.restart_count(tickets) > before, timeout=60)

    def paid() -> httpx.Response | None:
        response = buyer.post("/api/payments", json={"token": "tok_visa", "orderId": order["id"]})
        assert response.status_code in (201, 503), response.text
        return response if response.status_code == 201 else None

    eventually(paid, timeout=60)
    eventually(lambda: buyer.get(f"/api/orders/{order['id']}").json()["status"] == "complete", timeout=60)
    # tickets, killed before the payment, still serves the ticket as reserved: nothing it held was lost.
    eventually(lambda: seller.get(f"/api/tickets/{ticket['id']}").status_code == 200, timeout=60)
    assert seller.get(f"/api/tickets/{ticket['id']}").json()["orderId"] == order["id"]
