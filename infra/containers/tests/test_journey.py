"""The user journey through the harness's ingress, on the images, wired as the dev overlay wires them."""

from __future__ import annotations

import httpx
from containerkit import ORDER_EXPIRATION_SECONDS, Stack, eventually, signup


def order(buyer: httpx.Client, ticket_id: str) -> httpx.Response:
    """Reserve a ticket, once orders has heard of it (503 until its consumer has caught up)."""

    def placed() -> httpx.Response | None:
        response = buyer.post("/api/orders", json={"ticketId": ticket_id})
        assert response.status_code in (201, 404, 503), response.text
        return response if response.status_code == 201 else None

    return eventually(placed)


def test_sign_up_sell_reserve_pay_and_the_order_completes(stack: Stack) -> None:
    seller, user = signup(stack)
    buyer, _ = signup(stack)
    me = seller.get("/api/users/currentuser").json()["currentUser"]
    assert me["id"] == user["id"]

    ticket = seller.post("/api/tickets", json={"title": "Container concert", "price": 42.5})
    assert ticket.status_code == 201, ticket.text
    placed = order(buyer, ticket.json()["id"]).json()
    assert placed["status"] == "created"
    assert placed["ticket"]["price"] == 42.5
    eventually(lambda: seller.get(f"/api/tickets/{ticket.json()['id']}").json()["orderId"] == placed["id"])

    def paid() -> httpx.Response | None:
        response = buyer.post("/api/payments", json={"token": "tok_visa", "orderId": placed["id"]})
        assert response.status_code in (201, 503), response.text
        return response if response.status_code == 201 else None

    assert eventually(paid).json()["id"]
    eventually(lambda: buyer.get(f"/api/orders/{placed['id']}").json()["status"] == "complete")
    again = buyer.post("/api/payments", json={"token": "tok_visa", "orderId": placed["id"]})
    assert again.status_code == 400, again.text


def test_an_unpaid_reservation_expires_and_the_ticket_is_free_again(stack: Stack) -> None:
    seller, _ = signup(stack)
    buyer, _ = signup(stack)
    late_buyer, _ = signup(stack)
    ticket = seller.post("/api/tickets", json={"title": "Short window", "price": 10}).json()
    placed = order(buyer, ticket["id"]).json()

    timeout = ORDER_EXPIRATION_SECONDS + 30
    eventually(lambda: buyer.get(f"/api/orders/{placed['id']}").json()["status"] == "cancelled", timeout=timeout)
    eventually(lambda: seller.get(f"/api/tickets/{ticket['id']}").json()["orderId"] is None)
    assert order(late_buyer, ticket["id"]).json()["ticket"]["id"] == ticket["id"]


def test_the_ingress_routes_only_its_paths_and_every_answer_has_a_request_id(stack: Stack) -> None:
    client = stack.client()
    unknown = client.get("/api/nothing-here")
    assert unknown.status_code == 404
    assert unknown.json() == {"errors": [{"message": "Not Found"}]}
    signed_out = client.get("/api/users/currentuser", headers={"X-Request-ID": "container-test-1"})
    assert signed_out.json() == {"currentUser": None}
    assert signed_out.headers["x-request-id"] == "container-test-1"


def test_the_web_client_serves_the_ticket_list_from_the_api_at_the_root(stack: Stack) -> None:
    seller, _ = signup(stack)
    title = "Client-side container gig"
    assert seller.post("/api/tickets", json={"title": title, "price": 12}).status_code == 201

    def listed() -> httpx.Response | None:
        page = stack.client().get("/")
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        return page if title in page.text else None

    assert "x-request-id" in eventually(listed).headers
