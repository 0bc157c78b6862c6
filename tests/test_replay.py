"""`ticketing replay`: after a flow that publishes every event, wiped replicas are rebuilt from the streams exactly."""

from __future__ import annotations

import asyncio
import importlib
import uuid
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from sqlalchemy import text
from typer.testing import CliRunner

from ticketing_common.events import EVENT_TYPES
from ticketing_dev import cli
from ticketing_testing import eventually
from ticketing_testing.plugin import RunningService, ServiceStarter

# The command connects to the bus as the operator.
pytestmark = pytest.mark.usefixtures("operator_identity")

SERVICES = ["auth", "tickets", "orders", "expiration", "payments"]

# Each replica as a query, its rows in a stable order. Expiration's job times are its own bookkeeping (when it stored,
# fired or dropped a job), which no event carries: the rebuild keeps them from the live row, and after a wipe only
# whether a job was dropped can come back (see the README).
REPLICAS = {
    "orders": "SELECT id, title, price, version, order_id FROM tickets ORDER BY id",
    "payments": "SELECT id, version, user_id, price, status, expires_at FROM orders ORDER BY id",
    "tickets": "SELECT order_id, ticket_id, version, expires_at, cancelled FROM order_versions ORDER BY order_id",
    "expiration": "SELECT order_id, version, expires_at, cancelled_at IS NOT NULL FROM expiration_jobs ORDER BY order_id",
}
WIPE = {"orders": "tickets", "payments": "orders", "tickets": "order_versions", "expiration": "expiration_jobs"}


async def start_all(start_service: ServiceStarter) -> dict[str, RunningService]:
    running = {}
    for name in SERVICES:
        # Imported, never skipped: a service that does not import must fail this test, not leave it out.
        app = importlib.import_module(f"ticketing_{name}.app")
        settings = importlib.import_module(f"ticketing_{name}.settings")
        overrides: dict[str, Any] = {"order_expiration_seconds": 8} if name == "orders" else {}
        running[name] = await start_service(app.create_app, settings.Settings, f"ticketing_{name}", **overrides)
    return running


async def rows(service: RunningService, query: str) -> list[tuple[Any, ...]]:
    async with service.sessionmaker() as session:
        return [tuple(row) for row in (await session.execute(text(query))).all()]


async def quiet(s: dict[str, RunningService], nats_client: NATS) -> bool:
    """Every event published and every durable caught up."""
    for service in s.values():
        if (await rows(service, "SELECT count(*) FROM outbox WHERE sent_at IS NULL"))[0][0]:
            return False
    js = nats_client.jetstream()
    for subject, event in EVENT_TYPES.items():
        for consumer in event.consumers:
            stream = {"ticket": "TICKETS", "order": "ORDERS", "expiration": "EXPIRATION", "payment": "PAYMENTS"}
            info = await js.consumer_info(stream[subject.split(".")[0]], f"{consumer}-{subject.replace('.', '-')}")
            if info.num_pending or info.num_ack_pending:
                return False
    return True


async def test_wiped_replicas_are_rebuilt_identical_from_the_streams_without_publishing_anything(
    start_service: ServiceStarter, nats_client: NATS
) -> None:
    s = await start_all(start_service)
    users = []
    for _ in range(2):
        signed = await s["auth"].client.post(
            "/api/users/signup", json={"email": f"{uuid.uuid4().hex[:10]}@example.com", "password": "long enough pw"}
        )
        users.append({"Cookie": f"session={signed.cookies['session']}"})
    seller, buyer = users

    async def listed(title: str) -> dict[str, Any]:
        created = await s["tickets"].client.post("/api/tickets", json={"title": title, "price": 10}, headers=seller)
        assert created.status_code == 201
        ticket: dict[str, Any] = created.json()
        await eventually(lambda: rows(s["orders"], f"SELECT 1 FROM tickets WHERE id = '{ticket['id']}'"), timeout=20)
        return ticket

    async def order(ticket: dict[str, Any]) -> dict[str, Any]:
        placed = await s["orders"].client.post("/api/orders", json={"ticketId": ticket["id"]}, headers=buyer)
        assert placed.status_code == 201, placed.text
        body: dict[str, Any] = placed.json()
        await eventually(lambda: rows(s["payments"], f"SELECT 1 FROM orders WHERE id = '{body['id']}'"), timeout=20)
        return body

    paid_ticket = await listed("paid")
    edited = await s["tickets"].client.put(
        f"/api/tickets/{paid_ticket['id']}", json={"title": "paid, renamed", "price": 12.5}, headers=seller
    )
    assert edited.status_code == 200
    await eventually(
        lambda: rows(s["orders"], f"SELECT 1 FROM tickets WHERE version = 1 AND id = '{paid_ticket['id']}'")
    )
    paid = await order(paid_ticket)
    payment = await s["payments"].client.post(
        "/api/payments", json={"token": "tok_visa", "orderId": paid["id"]}, headers=buyer
    )
    assert payment.status_code == 201, payment.text
    cancelled = await order(await listed("cancelled"))
    assert (await s["orders"].client.delete(f"/api/orders/{cancelled['id']}", headers=buyer)).status_code == 204
    expired = await order(await listed("expired"))

    async def settled() -> bool:
        statuses = {
            order_id: (await s["orders"].client.get(f"/api/orders/{order_id}", headers=buyer)).json()["status"]
            for order_id in (paid["id"], cancelled["id"], expired["id"])
        }
        fired = await rows(s["expiration"], "SELECT count(*) FROM expiration_jobs WHERE fired_at IS NOT NULL")
        return statuses == {paid["id"]: "complete", cancelled["id"]: "cancelled", expired["id"]: "cancelled"} and (
            fired[0][0] == 2  # the expired order's job, and the paid one's, which orders ignored
        )

    await eventually(settled, timeout=40)
    await eventually(lambda: quiet(s, nats_client), timeout=20)
    recorded = {name: await rows(s[name], query) for name, query in REPLICAS.items()}
    assert all(recorded.values())
    js = nats_client.jetstream()
    published = {stream: (await js.stream_info(stream)).state.messages for stream in ("TICKETS", "ORDERS", "PAYMENTS")}
    assert published == {"TICKETS": 9, "ORDERS": 5, "PAYMENTS": 1}  # every event, and each once

    for name, table in WIPE.items():
        async with s[name].sessionmaker() as session, session.begin():
            # As if the replica were lost: past the foreign keys that the service's own rows hold into it.
            await session.execute(text("SET LOCAL session_replication_role = replica"))
            await session.execute(text(f"DELETE FROM {table}"))
        assert await rows(s[name], REPLICAS[name]) == []

    for name in WIPE:
        argv = ["replay", name, "--database-url", s[name].settings.database_url, "--server", s[name].settings.nats_url]
        result = await asyncio.to_thread(CliRunner().invoke, cli.app, argv)
        assert result.exit_code == 0, result.output
        assert "replayed" in result.output

    assert {name: await rows(s[name], query) for name, query in REPLICAS.items()} == recorded
    assert {stream: (await js.stream_info(stream)).state.messages for stream in published} == published
    shown = await s["orders"].client.get(f"/api/orders/{paid['id']}", headers=buyer)
    assert shown.json()["ticket"]["title"] == "paid, renamed"
    for name in WIPE:
        schemas = await rows(s[name], "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'replay_%'")
        assert schemas == []
