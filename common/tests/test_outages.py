"""A service while its database or NATS is unreachable: 503 with Retry-After, readiness, and recovery.

The servers stay up (other tests share them); a TCP proxy between the service and each server takes the network
away, which is what a restart or a partition looks like from the service's side.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select

from busapp import TicketUpdatedListener, create_app, replica_rows
from ticketing_common.db import DeadLetter
from ticketing_common.events import TicketUpdated
from ticketing_common.migrations import upgrade
from ticketing_common.requestid import current_request_id
from ticketing_common.settings import ServiceSettings
from ticketing_testing import eventually
from ticketing_testing.plugin import RunningService, Servers, ServiceStarter
from ticketing_testing.proxy import TcpProxy


@pytest.fixture
async def db_proxy(clean_state: Servers) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy.for_url(clean_state.database("busapp"))
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def nats_proxy(clean_state: Servers) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy.for_url(clean_state.nats.url)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def probe_behind_proxies(
    db_proxy: TcpProxy, nats_proxy: TcpProxy, start_service: ServiceStarter, clean_state: Servers
) -> RunningService:
    # The proxies first, so that they are torn down after the service: it stops through them.
    return await start_service(
        create_app,
        ServiceSettings,
        "busapp",
        database_url=db_proxy.url(clean_state.database("busapp")),
        nats_url=nats_proxy.url(clean_state.nats.url),
    )


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json() == {"errors": [{"message": "Service unavailable, retry shortly"}]}
    assert response.headers["X-Request-ID"]


async def _ready(service: RunningService) -> bool:
    return (await service.client.get("/readyz")).status_code == 200


async def test_a_database_outage_answers_503_with_retry_after_and_the_first_request_after_it_succeeds(
    probe_behind_proxies: RunningService, db_proxy: TcpProxy
) -> None:
    client = probe_behind_proxies.client
    assert (await client.post("/api/probe/ok")).status_code == 201  # the pool now holds a connection

    db_proxy.cut()  # every pooled connection is dropped, new ones are refused: a database restarting
    _assert_unavailable(await client.post("/api/probe/ok"))
    _assert_unavailable(await client.post("/api/probe/ok"))
    readiness = await client.get("/readyz")
    assert readiness.status_code == 503
    assert readiness.json() == {"errors": [{"message": "Database is not reachable"}]}

    db_proxy.restore()
    # No request pays for the outage once it is over: the pool replaces connections the server closed.
    assert (await client.post("/api/probe/ok")).status_code == 201
    assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_a_restart_under_pooled_connections_costs_no_request(
    probe_behind_proxies: RunningService, db_proxy: TcpProxy
) -> None:
    """The first request after a database restart succeeds (the pool checks connections before use)."""
    client = probe_behind_proxies.client
    assert (await client.post("/api/probe/ok")).status_code == 201
    db_proxy.cut()
    await asyncio.sleep(0.2)  # a restart takes longer than this: long enough for the reset to reach the service
    db_proxy.restore()  # the server is back before the next request, but every pooled connection died with it
    assert (await client.post("/api/probe/ok")).status_code == 201


async def test_an_outage_logs_one_line_per_error_and_one_traceback(
    probe_behind_proxies: RunningService, db_proxy: TcpProxy
) -> None:
    lines: list[tuple[str, bool, str | None]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append((record.getMessage(), record.exc_info is not None, current_request_id()))

    handler = Capture(level=logging.WARNING)
    errors_logger = logging.getLogger("ticketing.errors")
    errors_logger.addHandler(handler)
    try:
        db_proxy.cut()
        request_ids = [f"outage-{n}-{uuid.uuid4().hex[:8]}" for n in range(5)]
        for request_id in request_ids:
            response = await probe_behind_proxies.client.post("/api/probe/ok", headers={"X-Request-ID": request_id})
            _assert_unavailable(response)
            assert response.headers["X-Request-ID"] == request_id
    finally:
        errors_logger.removeHandler(handler)
        db_proxy.restore()

    outage_lines = [line for line in lines if line[0].startswith("outage:")]
    assert [request_id for _, _, request_id in outage_lines] == request_ids
    assert [with_traceback for _, with_traceback, _ in outage_lines] == [True, False, False, False, False]
    assert outage_lines[-1][0].endswith("5 errors in this outage")


async def test_readiness_fails_while_nats_is_unreachable_and_recovers(
    probe_behind_proxies: RunningService, nats_proxy: TcpProxy
) -> None:
    assert await _ready(probe_behind_proxies)
    nats_proxy.cut()

    async def not_ready() -> httpx.Response | None:
        response = await probe_behind_proxies.client.get("/readyz")
        return response if response.status_code == 503 else None

    response = await eventually(not_ready)
    assert response.json() == {"errors": [{"message": "NATS is not connected"}]}

    nats_proxy.restore()
    await eventually(lambda: _ready(probe_behind_proxies))


async def test_readiness_fails_while_migrations_are_missing_and_recovers_once_applied(
    start_service: ServiceStarter, clean_state: Servers
) -> None:
    url = clean_state.postgres.create_database(f"unmigrated_{uuid.uuid4().hex[:12]}")
    service = await start_service(create_app, ServiceSettings, "busapp", database_url=url)
    response = await service.client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"errors": [{"message": "Database migrations are not applied"}]}

    await asyncio.to_thread(upgrade, "busapp", url)
    assert (await service.client.get("/readyz")).json() == {"status": "ready"}


async def test_an_outage_does_not_use_up_a_messages_deliveries_and_it_is_applied_soon_after_recovery(
    probe_behind_proxies: RunningService, db_proxy: TcpProxy, nats_client
) -> None:
    """Retries that fit the failure: while the database is unreachable, an event is retried every
    outage_retry_delay without counting towards max_deliver (6 for this listener), so it is neither dead-lettered
    nor given up by JetStream; once the database is back it is applied with the next retry."""
    [listener] = [li for li in probe_behind_proxies.runtime.listeners if isinstance(li, TicketUpdatedListener)]
    listener.outage_retry_delay = 0.1  # the test's own pace; 1 s in a service
    js = nats_client.jetstream()
    event = TicketUpdated(
        id=uuid.uuid4(), version=0, title="through the outage", price=1, user_id=uuid.uuid4(), order_id=None
    )
    db_proxy.cut()
    await js.publish(event.subject, event.to_bytes(), headers={"Nats-Msg-Id": str(event.event_id)})

    async def delivered_past_max_deliver() -> bool:
        info = await js.consumer_info("TICKETS", listener.durable)
        return info.delivered.consumer_seq > listener.max_deliver + 2

    await eventually(delivered_past_max_deliver)
    db_proxy.restore()

    async def applied() -> bool:
        return any(row.id == event.id for row in await replica_rows(probe_behind_proxies))

    await eventually(applied)
    async with probe_behind_proxies.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(DeadLetter)) == 0
