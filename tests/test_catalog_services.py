"""Every service serves the committed event catalog beside its OpenAPI, and consumes exactly what it declares."""

from __future__ import annotations

import importlib

import pytest
import yaml

from ticketing_common.events import EVENT_TYPES
from ticketing_dev.catalog import ASYNCAPI_PATH
from ticketing_dev.repo import repo_root
from ticketing_testing.plugin import ServiceStarter

SERVICES = {"auth": "/api/users", "tickets": "/api/tickets", "orders": "/api/orders"}
SERVICES |= {"expiration": "/api/expiration", "payments": "/api/payments"}


@pytest.mark.parametrize("name", sorted(SERVICES))
async def test_a_service_serves_the_committed_catalog_and_binds_the_catalogs_consumers(
    name: str, start_service: ServiceStarter
) -> None:
    # Imported, never skipped: a service that does not import must fail this test, not leave it out.
    app = importlib.import_module(f"ticketing_{name}.app")
    settings = importlib.import_module(f"ticketing_{name}.settings")
    service = await start_service(app.create_app, settings.Settings, f"ticketing_{name}")

    served = await service.client.get(f"{SERVICES[name]}/asyncapi.json")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    assert served.json() == yaml.safe_load((repo_root() / ASYNCAPI_PATH).read_text())
    assert (await service.client.get(f"{SERVICES[name]}/openapi.json")).status_code == 200

    declared = {f"{name}-{s.replace('.', '-')}" for s, event in EVENT_TYPES.items() if name in event.consumers}
    assert {listener.durable for listener in service.runtime.listeners} == declared
