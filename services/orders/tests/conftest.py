"""orders test fixtures: the service against the test Postgres and NATS, and factories that go through the bus."""

import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from sqlalchemy import select

from ticketing_common.db import InboxRecord, OutboxEvent
from ticketing_common.events import Event, TicketCreated
from ticketing_orders.app import create_app
from ticketing_orders.models import Order, Ticket
from ticketing_orders.settings import Settings
from ticketing_testing import TestUser, eventually, make_user
from ticketing_testing.plugin import RunningService, ServiceStarter

Publish = Callable[..., Awaitable[None]]
SeedTicket = Callable[..., Awaitable[TicketCreated]]
PlaceOrder = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
async def orders(start_service: ServiceStarter, request: pytest.FixtureRequest) -> RunningService:
    """The orders service; parametrize indirectly with a dict of setting overrides."""
    overrides: dict[str, Any] = getattr(request, "param", {})
    return await start_service(create_app, Settings, "ticketing_orders", **overrides)


@pytest.fixture
def publish(nats_client: NATS) -> Publish:
    """Publish an event as its producer would: the payload as body, the event id as Nats-Msg-Id."""

    async def publish_event(event: Event, *, message_id: str | None = None) -> None:
        headers = {"Nats-Msg-Id": message_id or str(event.event_id)}
        await nats_client.jetstream().publish(event.subject, event.to_bytes(), headers=headers)

    return publish_event


@pytest.fixture
def ticket_row(orders: RunningService) -> Callable[[uuid.UUID], Awaitable[Ticket | None]]:
    """Read the replica's row for a ticket, or None."""

    async def read(ticket_id: uuid.UUID) -> Ticket | None:
        async with orders.sessionmaker() as session:
            return (await session.execute(select(Ticket).where(Ticket.id == ticket_id))).scalar_one_or_none()

    return read


@pytest.fixture
def order_row(orders: RunningService) -> Callable[[uuid.UUID | str], Awaitable[Order]]:
    """Read the orders table's row for an order."""

    async def read(order_id: uuid.UUID | str) -> Order:
        async with orders.sessionmaker() as session:
            return (await session.execute(select(Order).where(Order.id == uuid.UUID(str(order_id))))).scalar_one()

    return read


@pytest.fixture
def outbox_subjects(orders: RunningService) -> Callable[[], Awaitable[list[str]]]:
    """Read the subjects of every event orders has staged, in commit order."""

    async def read() -> list[str]:
        async with orders.sessionmaker() as session:
            return list((await session.execute(select(OutboxEvent.subject).order_by(OutboxEvent.seq))).scalars())

    return read


@pytest.fixture
def handled(orders: RunningService) -> Callable[[str, str], Awaitable[bool]]:
    """Whether a consumer has recorded a message id in its inbox (handled, duplicate or ignored alike)."""

    async def check(consumer: str, message_id: str) -> bool:
        async with orders.sessionmaker() as session:
            found = await session.execute(
                select(InboxRecord.message_id).where(
                    InboxRecord.consumer == consumer, InboxRecord.message_id == message_id
                )
            )
            return found.first() is not None

    return check


@pytest.fixture
def seed_ticket(publish: Publish, ticket_row: Callable[[uuid.UUID], Awaitable[Ticket | None]]) -> SeedTicket:
    """A ticket in the orders replica, put there by a real ticket.created round trip through JetStream."""

    async def seed(*, title: str | None = None, price: Decimal | str = "20.50") -> TicketCreated:
        event = TicketCreated(
            id=uuid.uuid4(),
            version=0,
            title=title or f"concert {uuid.uuid4().hex[:8]}",
            price=Decimal(price),
            user_id=uuid.uuid4(),
        )
        await publish(event)

        async def arrived() -> Ticket | None:
            return await ticket_row(event.id)

        await eventually(arrived)
        return event

    return seed


@pytest.fixture
def place_order(orders: RunningService, seed_ticket: SeedTicket) -> PlaceOrder:
    """An order placed through the API by a user (a new one unless given) for a ticket (a new one unless given)."""

    async def place(*, user: TestUser | None = None, ticket: TicketCreated | None = None) -> dict[str, Any]:
        ticket = ticket or await seed_ticket()
        user = user or make_user()
        response = await orders.client.post("/api/orders", json={"ticketId": str(ticket.id)}, headers=user.headers)
        assert response.status_code == 201, response.text
        return response.json()

    return place
