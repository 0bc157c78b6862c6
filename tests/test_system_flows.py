"""The user's flows through the gateway of a running `make dev` stack: sign up, sell, order, pay."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from systemkit import Stack, eventually, needs, signup


def create_ticket(client: httpx.Client, title: str = "Concert", price: float = 20) -> dict[str, Any]:
    response = client.post("/api/tickets", json={"title": title, "price": price})
    assert response.status_code == 201, response.text
    return response.json()


def not_yet_known(response: httpx.Response) -> bool:
    """The contract's "retry shortly" for an entity a replica has not heard of yet: 503 with Retry-After, never 404."""
    if response.status_code != 503:
        return False
    assert response.headers.get("retry-after") == "1", response.headers
    assert response.json() == {"errors": [{"message": "Not yet known; retry shortly"}]}
    return True


def order_ticket(client: httpx.Client, ticket_id: str) -> dict[str, Any]:
    """Order a ticket once orders has heard of it (ticket.created travels over the bus first)."""

    def attempt() -> dict[str, Any] | None:
        response = client.post("/api/orders", json={"ticketId": ticket_id})
        if not_yet_known(response):
            return None
        assert response.status_code == 201, response.text
        return response.json()

    order = eventually(attempt)
    assert order is not None
    return order


def test_signs_up_and_stays_signed_in_with_the_cookie(stack: Stack) -> None:
    client, user = signup(stack)

    response = client.get("/api/users/currentuser")

    assert response.status_code == 200
    assert response.json()["currentUser"]["id"] == user["id"]
    assert "session" in client.cookies


def test_signs_out_and_signs_in_again(stack: Stack) -> None:
    client, user = signup(stack, password="a good password")

    assert client.post("/api/users/signout").status_code == 200
    assert client.get("/api/users/currentuser").json() == {"currentUser": None}
    response = client.post("/api/users/signin", json={"email": user["email"], "password": "a good password"})

    assert response.status_code == 200
    assert client.get("/api/users/currentuser").json()["currentUser"]["email"] == user["email"]


def test_refuses_a_wrong_password_in_the_contract_shape(stack: Stack) -> None:
    _, user = signup(stack)

    response = stack.client().post("/api/users/signin", json={"email": user["email"], "password": "wrong password"})

    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Invalid credentials"}]}


def test_echoes_the_request_id_through_the_gateway(stack: Stack) -> None:
    response = stack.client().get("/api/users/currentuser", headers={"X-Request-ID": "system-test-123"})

    assert response.headers["x-request-id"] == "system-test-123"


def test_answers_an_unknown_route_with_404_in_the_error_shape(stack: Stack) -> None:
    response = stack.client().get("/api/unknown/thing")

    assert response.status_code == 404
    assert response.json() == {"errors": [{"message": "Not Found"}]}


@needs("tickets")
def test_creates_updates_and_lists_tickets(stack: Stack) -> None:
    client, user = signup(stack)
    title = f"Show {uuid.uuid4().hex[:8]}"

    ticket = create_ticket(client, title, 25)
    updated = client.put(f"/api/tickets/{ticket['id']}", json={"title": f"{title} (late)", "price": 30.5})
    listed = stack.client().get("/api/tickets", params={"limit": 100})

    assert ticket["userId"] == user["id"] and ticket["version"] == 0 and ticket["orderId"] is None
    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == 1 and updated.json()["price"] == 30.5
    assert any(t["id"] == ticket["id"] and t["title"] == f"{title} (late)" for t in listed.json())
    assert stack.client().get(f"/api/tickets/{ticket['id']}").json()["title"] == f"{title} (late)"


@needs("tickets")
def test_refuses_to_edit_someone_elses_ticket(stack: Stack) -> None:
    seller, _ = signup(stack)
    other, _ = signup(stack)
    ticket = create_ticket(seller)

    response = other.put(f"/api/tickets/{ticket['id']}", json={"title": "Mine now", "price": 1})

    assert response.status_code == 401


@needs("tickets", "orders")
def test_orders_a_ticket_and_refuses_a_second_order_for_it(stack: Stack) -> None:
    seller, _ = signup(stack)
    buyer, buyer_user = signup(stack)
    rival, _ = signup(stack)
    ticket = create_ticket(seller, "Opera", 40)

    order = order_ticket(buyer, ticket["id"])
    second = rival.post("/api/orders", json={"ticketId": ticket["id"]})

    assert order["status"] == "created" and order["userId"] == buyer_user["id"]
    assert order["ticket"]["id"] == ticket["id"]
    assert second.status_code == 400
    assert second.json()["errors"][0]["message"] == "Ticket is already reserved"
    reserved = eventually(lambda: (t := seller.get(f"/api/tickets/{ticket['id']}").json())["orderId"] and t)
    assert reserved["orderId"] == order["id"]
    edit = seller.put(f"/api/tickets/{ticket['id']}", json={"title": "Opera", "price": 50})
    assert edit.status_code == 400
    assert edit.json()["errors"][0]["message"] == "Cannot edit a reserved ticket"


@needs("tickets", "orders")
def test_cancelling_an_order_frees_the_ticket(stack: Stack) -> None:
    seller, _ = signup(stack)
    buyer, _ = signup(stack)
    ticket = create_ticket(seller)
    order = order_ticket(buyer, ticket["id"])

    assert buyer.delete(f"/api/orders/{order['id']}").status_code == 204

    assert buyer.get(f"/api/orders/{order['id']}").json()["status"] == "cancelled"
    eventually(lambda: seller.get(f"/api/tickets/{ticket['id']}").json()["orderId"] is None)


@needs("tickets", "orders", "payments")
def test_pays_for_an_order_and_the_order_completes(stack: Stack) -> None:
    seller, _ = signup(stack)
    buyer, _ = signup(stack)
    ticket = create_ticket(seller, "Final", 99.99)
    order = order_ticket(buyer, ticket["id"])

    def pay() -> httpx.Response | None:
        response = buyer.post("/api/payments", json={"token": "tok_visa", "orderId": order["id"]})
        return None if not_yet_known(response) else response  # payments has not heard of the order yet

    payment = eventually(pay)

    assert payment is not None and payment.status_code == 201, payment and payment.text
    assert "id" in payment.json()
    completed = eventually(lambda: (o := buyer.get(f"/api/orders/{order['id']}").json())["status"] == "complete" and o)
    assert completed["status"] == "complete"
    again = buyer.post("/api/payments", json={"token": "tok_visa", "orderId": order["id"]})
    assert again.status_code == 400
    assert buyer.delete(f"/api/orders/{order['id']}").status_code == 400


@needs("tickets", "orders", "payments")
def test_a_declined_card_gives_402_and_the_order_stays_open(stack: Stack) -> None:
    seller, _ = signup(stack)
    buyer, _ = signup(stack)
    ticket = create_ticket(seller)
    order = order_ticket(buyer, ticket["id"])

    def pay() -> httpx.Response | None:
        response = buyer.post("/api/payments", json={"token": "tok_chargeDeclined", "orderId": order["id"]})
        return None if not_yet_known(response) else response

    declined = eventually(pay)

    assert declined is not None and declined.status_code == 402
    assert buyer.get(f"/api/orders/{order['id']}").json()["status"] == "created"
