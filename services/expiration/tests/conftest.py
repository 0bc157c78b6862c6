"""expiration test fixtures: the service running against the test Postgres and NATS."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ticketing_expiration.app import create_app
from ticketing_expiration.settings import Settings
from ticketing_testing.plugin import RunningService, ServiceStarter

ReplicaStarter = Callable[..., Awaitable[RunningService]]


@pytest.fixture
def start_replica(start_service: ServiceStarter) -> ReplicaStarter:
    """Start an expiration replica on the shared test database; keyword arguments override settings."""

    async def start(**overrides: Any) -> RunningService:
        return await start_service(create_app, Settings, "ticketing_expiration", **overrides)

    return start


@pytest.fixture
async def expiration(start_replica: ReplicaStarter) -> RunningService:
    return await start_replica()
