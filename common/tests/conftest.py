"""Fixtures for the bus tests."""

from __future__ import annotations

import pytest

from busapp import create_app
from ticketing_common.settings import ServiceSettings
from ticketing_testing.plugin import RunningService, ServiceStarter


@pytest.fixture
async def probe(start_service: ServiceStarter) -> RunningService:
    return await start_service(create_app, ServiceSettings, "busapp")
