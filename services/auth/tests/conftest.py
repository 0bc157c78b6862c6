"""auth test fixtures: the service running against the test Postgres and NATS."""

import pytest

from ticketing_auth.app import create_app
from ticketing_auth.settings import Settings
from ticketing_testing.plugin import RunningService, ServiceStarter


@pytest.fixture
async def auth(start_service: ServiceStarter) -> RunningService:
    return await start_service(create_app, Settings, "ticketing_auth")
