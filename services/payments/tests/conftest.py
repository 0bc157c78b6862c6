"""payments test fixtures: the service (fake provider) against the test Postgres and NATS, and an order factory."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from ticketing_common.events import OrderStatus
from ticketing_payments import service
from ticketing_payments.app import create_app
from ticketing_payments.models import Order
from ticketing_payments.providers import FakeProvider
from ticketing_payments.settings import Settings
from ticketing_testing.plugin import RunningService, ServiceStarter

OrderFactory = Callable[..., Awaitable[Order]]


@pytest.fixture
async def payments(start_service: ServiceStarter, request: pytest.FixtureRequest) -> RunningService:
    """The payments service; parametrize indirectly with a dict of setting overrides."""
    overrides: dict[str, Any] = getattr(request, "param", {})
    return await start_service(create_app, Settings, "ticketing_payments", **overrides)


@pytest.fixture
def fake_provider(payments: RunningService) -> FakeProvider:
    provider = payments.app.state.payment_provider
    assert isinstance(provider, FakeProvider)
    return provider


async def add_order(
    payments: RunningService,
    *,
    user_id: uuid.UUID | None = None,
    price: Decimal = Decimal("20.50"),
    status: OrderStatus = OrderStatus.CREATED,
    expires_in: float = 900,
) -> Order:
    """Put an order in a payments service's replica as order.created would, with unique ids."""
    order_id = uuid.uuid4()
    async with payments.runtime.database.transaction() as uow:
        created = service.ReplicaOrder(
            id=order_id,
            version=0,
            user_id=user_id or uuid.uuid4(),
            price=price,
            status=status.value,
            expires_at=datetime.now(UTC) + timedelta(seconds=expires_in),
        )
        await service.record_order_created(uow=uow, order=created)
        if status == OrderStatus.CANCELLED:
            await service.record_order_cancelled(uow=uow, order_id=order_id, version=1)
    async with payments.sessionmaker() as session:
        order = await session.get(Order, order_id)
    assert order is not None
    return order


@pytest.fixture
def order_in() -> Callable[..., Awaitable[Order]]:
    """add_order for test modules (which cannot import conftest): an order in the given payments service's replica."""
    return add_order


@pytest.fixture
def make_order(payments: RunningService) -> OrderFactory:
    """An order in the `payments` fixture's replica; keyword arguments override fields."""

    async def make(**overrides: Any) -> Order:
        return await add_order(payments, **overrides)

    return make
