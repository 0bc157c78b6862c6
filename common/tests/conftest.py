"""Fixtures for the bus tests."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from busapp import Replica, create_app
from ticketing_common.settings import ServiceSettings
from ticketing_common.testing.plugin import RunningService, ServiceStarter


@pytest.fixture
async def probe(start_service: ServiceStarter) -> RunningService:
    return await start_service(create_app, ServiceSettings, "busapp")


async def replica_rows(service: RunningService) -> list[Replica]:
    async with service.sessionmaker() as session:
        return list((await session.execute(select(Replica).order_by(Replica.title))).scalars())
