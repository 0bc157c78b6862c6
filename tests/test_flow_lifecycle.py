"""Every order reaches an end: paid and complete, or expired with its ticket free again (all five services)."""

from __future__ import annotations

import importlib
import uuid

from sqlalchemy import text

from ticketing_testing import eventually, make_user
from ticketing_testing.plugin import RunningService, ServiceStarter

SERVICES = ["auth", "tickets", "orders", "expiration", "payments"]
# Imported, never skipped: a service that does not import must fail this suite, not leave it out.
modules = {name: importlib.import_module(f"ticketing_{name}.app") for name in SERVICES}
settings = {name: importlib.import_module(f"ticketing_{name}.settings") for name in SERVICES}


async def start_all(start_service: ServiceStarter, **orders_overrides: object) -> dict[str, RunningService]:
    running = {}
    for name in SERVICES:
        overrides = orders_overrides if name == "orders" else {}
        running[name] = await start_service(
            modules[name].create_app, settings[name].Settings, f"ticketing_{name}", **overrides
        )
    return running


async def replica_version(service: RunningService, table: str, row_id: str) -> int | None:
    async with service.sessionmaker() as session:
        return await session.scalar(text(f"SELECT version FROM {table} WHERE id = :id"), {"id": uuid.UUID(row_id)})


async def sign_up(auth: RunningService) -> dict[str, str]:
    response = await auth.client.post(
        "/api/users/signup", json={"email": f"{uuid.uuid4().hex[:10]}@example.com", "password": "long enough pw"}
    )
    assert response.status_code == 201
    return {"Cookie": f"session={response.cookies['session']}"}


async def create_ticket(s: dict[str, RunningService], seller: dict[str, str], price: float = 42) -> dict:
    created = await s["tickets"].client.post("/api/tickets", json={"title": "Show", "price": price}, headers=seller)
    assert created.status_code == 201
    ticket = created.json()
    await eventually(lambda: _is(replica_version(s["orders"], "tickets", ticket["id"]), 0), timeout=15)
    return ticket


async def _is(awaitable, expected) -> bool:
    return (await awaitable) == expected


async def test_signup_ticket_order_pay_completes_the_order_and_keeps_the_ticket_reserved(start_service) -> None:
    s = await start_all(start_service)
    seller, buyer = await sign_up(s["auth"]), await sign_up(s["auth"])
    ticket = await create_ticket(s, seller, price=42.5)

    ordered = await s["orders"].client.post("/api/orders", json={"ticketId": ticket["id"]}, headers=buyer)
    assert ordered.status_code == 201
    order = ordered.json()
    await eventually(lambda: _is(replica_version(s["payments"], "orders", order["id"]), 0), timeout=15)

    paid = await s["payments"].client.post(
        "/api/payments", json={"token": "tok_visa", "orderId": order["id"]}, headers=buyer
    )
    assert paid.status_code == 201, paid.text
    assert set(paid.json()) == {"id"}

    async def complete() -> bool:
        shown = await s["orders"].client.get(f"/api/orders/{order['id']}", headers=buyer)
        return shown.json()["status"] == "complete"

    await eventually(complete, timeout=15)
    cancel = await s["orders"].client.delete(f"/api/orders/{order['id']}", headers=buyer)
    assert cancel.status_code == 400
    assert cancel.json() == {"errors": [{"message": "Cannot cancel a completed order"}]}
    again = await s["payments"].client.post(
        "/api/payments", json={"token": "tok_visa", "orderId": order["id"]}, headers=buyer
    )
    assert again.status_code == 400
    assert again.json()["errors"][0]["message"] == "Order already paid"

    shown = (await s["tickets"].client.get(f"/api/tickets/{ticket['id']}")).json()
    assert shown["orderId"] == order["id"]
    other = make_user()
    refused = await s["orders"].client.post("/api/orders", json={"ticketId": ticket["id"]}, headers=other.headers)
    assert refused.json() == {"errors": [{"message": "Ticket is already reserved"}]}


async def test_an_unpaid_order_expires_and_frees_its_ticket(start_service, events) -> None:
    s = await start_all(start_service, order_expiration_seconds=2)
    seller, buyer, next_buyer = await sign_up(s["auth"]), await sign_up(s["auth"]), await sign_up(s["auth"])
    ticket = await create_ticket(s, seller)

    ordered = await s["orders"].client.post("/api/orders", json={"ticketId": ticket["id"]}, headers=buyer)
    assert ordered.status_code == 201
    order = ordered.json()

    async def cancelled() -> bool:
        shown = await s["orders"].client.get(f"/api/orders/{order['id']}", headers=buyer)
        return shown.json()["status"] == "cancelled"

    await eventually(cancelled, timeout=20)
    [expired] = await events.wait_for("expiration.complete")
    assert expired == {"orderId": order["id"]}

    async def freed() -> bool:
        shown = (await s["tickets"].client.get(f"/api/tickets/{ticket['id']}")).json()
        return shown["orderId"] is None

    await eventually(freed, timeout=15)
    listed = (await s["tickets"].client.get("/api/tickets")).json()
    assert ticket["id"] in {t["id"] for t in listed}

    late = await s["payments"].client.post(
        "/api/payments", json={"token": "tok_visa", "orderId": order["id"]}, headers=buyer
    )
    assert late.status_code == 400

    # The ticket can be ordered again: orders' replica caught up with the release (version 2).
    await eventually(lambda: _is(replica_version(s["orders"], "tickets", ticket["id"]), 2), timeout=15)
    reordered = await s["orders"].client.post("/api/orders", json={"ticketId": ticket["id"]}, headers=next_buyer)
    assert reordered.status_code == 201
    assert len(events.of("order.cancelled")) == 1
