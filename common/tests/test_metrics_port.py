"""Issue 15 #9: with METRICS_PORT, /metrics is served on that port only, never on the API port."""

from __future__ import annotations

import httpx

from busapp import create_app
from ticketing_common.settings import ServiceSettings
from ticketing_dev.servers import free_port
from ticketing_testing.plugin import ServiceStarter


async def test_metrics_move_to_their_own_port(start_service: ServiceStarter) -> None:
    port = free_port()
    service = await start_service(create_app, ServiceSettings, "busapp", metrics_port=port, metrics_host="127.0.0.1")
    assert (await service.client.get("/metrics")).status_code == 404
    assert (await service.client.get("/healthz")).status_code == 200
    async with httpx.AsyncClient(trust_env=False) as client:
        scraped = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert scraped.status_code == 200
    assert "ticketing_http_request_seconds" in scraped.text
