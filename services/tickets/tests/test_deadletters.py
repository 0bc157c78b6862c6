"""`ticketing deadletters` on the tickets service's real dead letters: list, show, retry through the handler, drop."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from rich.console import Console
from sqlalchemy import select
from typer.testing import CliRunner, Result

from ticketing_common.db import DeadLetter, OutboxEvent
from ticketing_dev import cli
from ticketing_testing import eventually
from ticketing_testing.plugin import RunningService, ServiceStarter
from ticketing_tickets.app import create_app
from ticketing_tickets.listeners import LISTENERS
from ticketing_tickets.settings import Settings

# The command connects to the bus as the operator.
pytestmark = pytest.mark.usefixtures("operator_identity")


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Output wide enough that no line is cut."""
    monkeypatch.setattr(cli, "console", Console(width=300, highlight=False, no_color=True))
    monkeypatch.setattr(cli, "err", Console(width=300, highlight=False, no_color=True, stderr=True))


@pytest.fixture
async def tickets(start_service: ServiceStarter, monkeypatch: pytest.MonkeyPatch) -> RunningService:
    """The tickets service, giving up on a failing event after two quick deliveries, and on a gap after a second."""
    for listener in LISTENERS:
        monkeypatch.setattr(listener, "retry_delay", 0.02)
        monkeypatch.setattr(listener, "max_retry_delay", 0.05)
        monkeypatch.setattr(listener, "max_deliver", 2)
    return await start_service(
        create_app, Settings, "ticketing_tickets", dead_letters_refresh_seconds=0.1, parked_max_age_seconds=1
    )


async def ticketing(service: RunningService, *args: str) -> Result:
    """Run the command against the service's database, in a thread: it runs its own event loop."""
    argv = [*args, "--database-url", service.settings.database_url]
    return await asyncio.to_thread(CliRunner().invoke, cli.app, argv)


async def rows(service: RunningService) -> list[DeadLetter]:
    async with service.sessionmaker() as session:
        return list((await session.execute(select(DeadLetter).order_by(DeadLetter.id))).scalars())


async def gauge(service: RunningService, subject: str) -> float:
    text = (await service.client.get("/metrics")).text
    found = re.search(rf'ticketing_dead_letters\{{service="tickets",subject="{re.escape(subject)}"\}} (\S+)', text)
    assert found, text
    return float(found.group(1))


async def gauge_reaches(service: RunningService, subject: str, value: float) -> None:
    """Wait for the gauge's next refreshes to show the value (the service counts its dead letters on a timer)."""

    async def check() -> bool:
        shown = await gauge(service, subject)
        assert shown == value, f"{subject}: {shown}"
        return True

    await eventually(check)


async def test_a_cancel_that_lost_its_create_waits_as_a_dead_letter_and_a_retry_applies_it_once(
    tickets: RunningService,
    create_ticket: Callable[..., Awaitable[dict[str, Any]]],
    publish: Callable[..., Awaitable[Any]],
    wait_handled: Callable[..., Awaitable[None]],
    make_order_created: Callable[..., Any],
    make_order_cancelled: Callable[..., Any],
) -> None:
    ticket = await create_ticket()
    created = make_order_created(ticket["id"])
    cancelled = make_order_cancelled(created)
    await publish(cancelled)
    [dead] = await eventually(rows_when(tickets, 1))
    assert (dead.consumer, dead.subject, dead.message_id) == (
        "tickets-order-cancelled",
        "order.cancelled",
        str(cancelled.event_id),
    )
    await gauge_reaches(tickets, "order.cancelled", 1)
    await gauge_reaches(tickets, "order.created", 0)

    listed = await ticketing(tickets, "deadletters", "list", "tickets")
    assert listed.exit_code == 0, listed.output
    assert re.search(rf"tickets\s+│\s+{dead.id}\s+│\s+tickets-order-cancelled\s+│\s+order.cancelled", listed.output)

    early = await ticketing(tickets, "deadletters", "retry", "tickets", str(dead.id), "--by", "alice")
    assert early.exit_code == 1
    assert "still out of order" in early.output
    assert (await rows(tickets))[0].resolution is None

    await publish(created)
    await wait_handled(created.event_id)
    shown = await tickets.client.get(f"/api/tickets/{ticket['id']}")
    assert shown.json()["orderId"] == str(created.id)

    retried = await ticketing(
        tickets, "deadletters", "retry", "tickets", str(dead.id), "--by", "alice", "--note", "create came"
    )
    assert retried.exit_code == 0, retried.output
    released = (await tickets.client.get(f"/api/tickets/{ticket['id']}")).json()
    assert released["orderId"] is None
    assert released["version"] == 2
    [resolved] = await rows(tickets)
    assert (resolved.resolution, resolved.resolved_by, resolved.resolution_note) == ("retried", "alice", "create came")
    assert resolved.resolved_at is not None
    await gauge_reaches(tickets, "order.cancelled", 0)
    async with tickets.sessionmaker() as session:
        updates = (await session.execute(select(OutboxEvent).where(OutboxEvent.subject == "ticket.updated"))).scalars()
        assert len(list(updates)) == 2  # reserved, then released by the retry: published by the service's relay

    again = await ticketing(tickets, "deadletters", "retry", "tickets", str(dead.id))
    assert again.exit_code == 1
    assert "already retried" in again.output
    assert (await tickets.client.get(f"/api/tickets/{ticket['id']}")).json()["version"] == 2


def rows_when(service: RunningService, count: int) -> Callable[[], Awaitable[list[DeadLetter] | None]]:
    async def check() -> list[DeadLetter] | None:
        found = await rows(service)
        return found if len(found) == count else None

    return check


async def test_a_poison_payload_cannot_be_retried_and_is_dropped_with_who_and_why(
    tickets: RunningService, nats_client: NATS
) -> None:
    message_id = str(uuid.uuid4())
    await nats_client.jetstream().publish(
        "order.created", b'{"id": "not-an-order", "\\u001b[31m": 1}', headers={"Nats-Msg-Id": message_id}
    )
    [dead] = await eventually(rows_when(tickets, 1))
    assert dead.reason.startswith("invalid payload")
    await gauge_reaches(tickets, "order.created", 1)

    shown = await ticketing(tickets, "deadletters", "show", "tickets", str(dead.id))
    assert shown.exit_code == 0, shown.output
    assert message_id in shown.output
    assert "invalid payload" in shown.output
    assert "\x1b" not in shown.output  # the payload is someone else's text: shown escaped

    refused = await ticketing(tickets, "deadletters", "retry", "tickets", str(dead.id))
    assert refused.exit_code == 1
    assert "still invalid" in refused.output

    no_reason = await ticketing(tickets, "deadletters", "drop", "tickets", str(dead.id), "--reason", " ")
    assert no_reason.exit_code == 1
    dropped = await ticketing(
        tickets, "deadletters", "drop", "tickets", str(dead.id), "--reason", "test publisher garbage", "--by", "bob"
    )
    assert dropped.exit_code == 0, dropped.output
    [resolved] = await rows(tickets)
    assert (resolved.resolution, resolved.resolved_by, resolved.resolution_note) == (
        "dropped",
        "bob",
        "test publisher garbage",
    )
    await gauge_reaches(tickets, "order.created", 0)

    waiting = await ticketing(tickets, "deadletters", "list", "tickets")
    assert "no dead letters waiting" in waiting.output
    history = await ticketing(tickets, "deadletters", "list", "tickets", "--all")
    assert "dropped by bob" in history.output
    twice = await ticketing(tickets, "deadletters", "drop", "tickets", str(dead.id), "--reason", "again")
    assert twice.exit_code == 1
    assert "already dropped" in twice.output
    unknown = await ticketing(tickets, "deadletters", "show", "tickets", "999999")
    assert unknown.exit_code == 1
    assert "no dead letter 999999" in unknown.output
