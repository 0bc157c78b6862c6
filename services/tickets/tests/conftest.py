"""tickets test fixtures: the service against the test Postgres and NATS, and factories that go through the API and bus."""

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import PubAck
from sqlalchemy import func, select

from ticketing_common.db import DeadLetter, InboxRecord
from ticketing_common.events import Event, OrderCancelled, OrderCreated, OrderStatus, OrderTicket, TicketRef
from ticketing_testing import TestUser, eventually, make_user
from ticketing_testing.plugin import RunningService, ServiceStarter
from ticketing_tickets.app import create_app
from ticketing_tickets.listeners import LISTENERS
from ticketing_tickets.settings import Settings

CreateTicket = Callable[..., Awaitable[dict[str, Any]]]
Publish = Callable[..., Awaitable[PubAck]]
WaitHandled = Callable[..., Awaitable[None]]


@pytest.fixture
async def tickets(
    start_service: ServiceStarter, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> RunningService:
    """The tickets service; failing handlers are retried quickly so their tests stay short. Parametrize indirectly
    with a dict of setting overrides."""
    for listener in LISTENERS:
        monkeypatch.setattr(listener, "retry_delay", 0.02)
        monkeypatch.setattr(listener, "max_retry_delay", 0.3)
    overrides: dict[str, Any] = getattr(request, "param", {})
    return await start_service(create_app, Settings, "ticketing_tickets", **overrides)


@pytest.fixture
def seller() -> TestUser:
    """A signed-in user who lists tickets."""
    return make_user()


@pytest.fixture
def create_ticket(tickets: RunningService, seller: TestUser) -> CreateTicket:
    """List a ticket through the API (as the seller unless told otherwise); returns the 201 body."""

    async def create(*, user: TestUser | None = None, title: str | None = None, price: float = 20) -> dict[str, Any]:
        body = {"title": title or f"concert {uuid.uuid4().hex[:8]}", "price": price}
        response = await tickets.client.post("/api/tickets", json=body, headers=(user or seller).headers)
        assert response.status_code == 201, response.text
        return response.json()

    return create


@pytest.fixture
def publish(nats_client: NATS) -> Publish:
    """Publish an event as its producer would: the payload as body, the event id as Nats-Msg-Id."""

    async def publish_event(event: Event, *, message_id: str | None = None) -> PubAck:
        headers = {"Nats-Msg-Id": message_id or str(event.event_id), "X-Request-ID": f"req-{event.event_id.hex[:12]}"}
        return await nats_client.jetstream().publish(event.subject, event.to_bytes(), headers=headers)

    return publish_event


@pytest.fixture
def wait_handled(tickets: RunningService) -> WaitHandled:
    """Wait until the tickets service has committed the handling of every given message id."""

    async def wait(*message_ids: str | uuid.UUID, timeout: float = 20.0) -> None:
        wanted = {str(m) for m in message_ids}

        async def all_handled() -> bool:
            async with tickets.sessionmaker() as session:
                seen = set(
                    (
                        await session.execute(select(InboxRecord.message_id).where(InboxRecord.message_id.in_(wanted)))
                    ).scalars()
                )
            return seen == wanted

        await eventually(all_handled, timeout=timeout)

    return wait


async def dead_letter_count(service: RunningService) -> int:
    """How many events the service gave up on."""
    async with service.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(DeadLetter))).scalar_one())


@pytest.fixture
def dead_letters(tickets: RunningService) -> Callable[[], Awaitable[int]]:
    """Count the tickets service's dead letters."""
    return lambda: dead_letter_count(tickets)


def order_created(
    ticket_id: uuid.UUID | str, *, order_id: uuid.UUID | None = None, expires_in: float = 900, price: float = 20
) -> OrderCreated:
    """An order.created (version 0) for a ticket, as orders publishes it."""
    return OrderCreated(
        id=order_id or uuid.uuid4(),
        version=0,
        status=OrderStatus.CREATED,
        user_id=uuid.uuid4(),
        expires_at=datetime.now(UTC) + timedelta(seconds=expires_in),
        ticket=OrderTicket(id=uuid.UUID(str(ticket_id)), price=price),
    )


def order_cancelled(created: OrderCreated, *, version: int = 1) -> OrderCancelled:
    """The order.cancelled that follows an order.created."""
    return OrderCancelled(id=created.id, version=version, ticket=TicketRef(id=created.ticket.id))


@pytest.fixture
def make_order_created() -> Callable[..., OrderCreated]:
    """order_created as a fixture, for test modules (which cannot import conftest)."""
    return order_created


@pytest.fixture
def make_order_cancelled() -> Callable[..., OrderCancelled]:
    """order_cancelled as a fixture."""
    return order_cancelled
