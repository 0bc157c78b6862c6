"""The service app factory: one lifespan wires the database, the bus, the relay, listeners and workers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from sqlalchemy import text

from ticketing_common import bus, metrics
from ticketing_common.bus import BusConnection
from ticketing_common.catalog import asyncapi_document
from ticketing_common.db import asyncpg_dsn, make_engine, make_sessionmaker
from ticketing_common.errors import error_body, error_chain, install_error_handlers
from ticketing_common.events import EVENT_TYPES
from ticketing_common.limits import RequestLimitsMiddleware
from ticketing_common.listener import Listener, ListenerWiring
from ticketing_common.logs import configure_logging
from ticketing_common.metrics import MetricsMiddleware, MetricsServer, serve_on_app_port
from ticketing_common.migrations import head_revision
from ticketing_common.outbox import OutboxRelay
from ticketing_common.parking import Parking
from ticketing_common.requestid import RequestIdMiddleware
from ticketing_common.routing import ServiceRoute
from ticketing_common.settings import ServiceSettings
from ticketing_common.uow import Database

logger = logging.getLogger("ticketing.app")


class Worker(Protocol):
    """A background job with a start and a graceful stop (the expiration scheduler, for one)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Runtime:
    """What the lifespan built; workers get it, tests read it."""

    settings: ServiceSettings
    database: Database
    bus: BusConnection
    relay: OutboxRelay
    listeners: list[Listener[Any]] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)


@dataclass(frozen=True)
class ServiceSpec:
    """Everything that makes one service different from another."""

    name: str
    package: str
    api_prefix: str
    settings: ServiceSettings
    routers: Sequence[APIRouter] = ()
    # Listener classes, or factories taking the wiring (to hand a listener something of the app's, as workers get).
    listeners: Sequence[Callable[[ListenerWiring], Listener[Any]]] = ()
    workers: Sequence[Callable[[Runtime], Worker]] = ()
    missing_messages: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    # The tables that hold only what the service learned from events, which `ticketing replay` rebuilds from the
    # streams; each names the columns that are the service's own bookkeeping (when it fired a job, say), which a
    # rebuild keeps from the live row.
    replicas: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


_NO_OPENTELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The runtime pool's reset: nothing beyond asyncpg's own rollback of an open transaction.

    Its connections only ever run plain statements and transactions (no SET, LISTEN, advisory locks or cursors
    outliving them), so the default reset query (`RESET ALL; UNLISTEN *; ...`) was a wasted round trip on every
    release, on the hottest paths (bench/).
    """


def create_service_app(spec: ServiceSpec) -> FastAPI:
    """Build a service: routes, error shape, request ids, metrics, health probes, and the bus lifespan."""
    settings = spec.settings
    configure_logging(spec.name, settings.log_level)
    head = head_revision(spec.package)

    consumed = [subject for subject, event in EVENT_TYPES.items() if spec.name in event.consumers]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics_server = MetricsServer(settings.metrics_port, settings.metrics_host) if settings.metrics_port else None
        if metrics_server is not None:
            metrics_server.start()
        engine = make_engine(settings.database_url)
        seed = settings.nats_nkey_seed
        connection = await bus.connect(
            settings.nats_url,
            settings.nats_client_id,
            identity=spec.name,
            nkey_seed=seed.get_secret_value() if seed is not None else None,
            tls_ca_file=settings.nats_tls_ca_file,
        )
        js = connection.js  # streams and durables exist already: the provisioner made them (provision.py)
        pool = await asyncpg.create_pool(
            asyncpg_dsn(settings.database_url), min_size=1, max_size=10, reset=_keep_session
        )
        database = Database(engine, make_sessionmaker(engine), pool)
        app.state.database = database
        relay = OutboxRelay(
            engine=engine,
            pool=pool,
            js=js,
            poll_seconds=settings.outbox_poll_seconds,
            retention_seconds=settings.outbox_retention_seconds,
        )
        runtime = Runtime(settings, database, connection, relay)
        app.state.runtime = runtime
        await relay.start()
        parking = Parking(database, max_age_seconds=settings.parked_max_age_seconds)
        wiring = ListenerWiring(
            service=spec.name, database=database, js=js, ack_wait=settings.nats_ack_wait_seconds, parking=parking
        )
        for make_listener in spec.listeners:
            listener = make_listener(wiring)
            await listener.start()
            runtime.listeners.append(listener)
        if runtime.listeners:
            await parking.start()
        for make_worker in spec.workers:
            worker = make_worker(runtime)
            await worker.start()
            runtime.workers.append(worker)
        # Counted on a timer rather than at scrape time: the metrics port's server is a thread that cannot ask the
        # database, and one refresh serves both ports alike.
        counting = (
            asyncio.create_task(
                _count_dead_letters_every(runtime, spec.name, consumed, settings.dead_letters_refresh_seconds)
            )
            if consumed
            else None
        )
        # What start-up built lives as long as the process: out of the collector's sight, so that a full collection
        # walks only what requests allocate. Without it a POST spent ~25% more CPU (bench/, its GC-off control).
        gc.collect()
        gc.freeze()
        logger.info("%s started", spec.name)
        try:
            yield
        finally:
            if counting is not None:
                counting.cancel()
            await asyncio.gather(*(w.stop() for w in runtime.workers), return_exceptions=True)
            await asyncio.gather(*(li.stop() for li in runtime.listeners), return_exceptions=True)
            await parking.stop()
            await relay.stop()
            await connection.close()
            await pool.close()
            await engine.dispose()
            if metrics_server is not None:
                metrics_server.stop()
            logger.info("%s stopped", spec.name)

    app = FastAPI(
        title=f"ticketing {spec.name}",
        description=spec.description,
        lifespan=lifespan,
        docs_url=f"{spec.api_prefix}/docs",
        redoc_url=None,
        openapi_url=f"{spec.api_prefix}/openapi.json",
        # Metrics are Prometheus (/metrics) and logs are JSON lines; nothing configures OpenTelemetry, so FastAPI's
        # native OTel hooks are off rather than asking for a provider on every request (bench/).
        telemetry=_NO_OPENTELEMETRY,
    )
    app.state.settings = settings
    # The test harness provisions the spec's durables; operators' tools (`ticketing deadletters retry`) run its listeners.
    app.state.spec = spec
    _serve_event_catalog(app, spec.api_prefix)
    install_error_handlers(app, spec.missing_messages)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestLimitsMiddleware)  # before anything reads the request, but inside the request id
    app.add_middleware(RequestIdMiddleware)
    for router in spec.routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and not isinstance(route, ServiceRoute):
                raise TypeError(f"{spec.name}: {route.path} must use APIRouter(route_class=ServiceRoute)")
        app.include_router(router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness: the process is up."""
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        """Readiness: the database is reachable and migrated, and NATS is connected."""
        runtime: Runtime | None = getattr(request.app.state, "runtime", None)
        problem = await _readiness_problem(runtime, head)
        if problem:
            return JSONResponse(error_body(problem), status_code=503)
        return JSONResponse({"status": "ready"})

    if settings.metrics_port is None:
        # Without a metrics port (the tests) /metrics is on the API port; with one, only there (a 404 here).
        serve_on_app_port(app)

    return app


def _serve_event_catalog(app: FastAPI, api_prefix: str) -> None:
    """GET <prefix>/asyncapi.json: the event catalog beside the OpenAPI, registered before the routers so that
    `/api/tickets/{id}` does not take it for an id."""
    rendered: list[bytes] = []

    @app.get(f"{api_prefix}/asyncapi.json", include_in_schema=False)
    async def get_asyncapi() -> Response:
        """The AsyncAPI 3 document of the bus (docs/asyncapi.yaml, as JSON)."""
        if not rendered:  # built on first use: nothing to pay at start-up
            rendered.append(json.dumps(asyncapi_document()).encode())
        return Response(rendered[0], media_type="application/json")


_COUNT_DEAD_LETTERS = "SELECT subject, count(*) FROM dead_letters WHERE resolved_at IS NULL GROUP BY subject"
_COUNT_PARKED = "SELECT subject, count(*) FROM parked_events GROUP BY subject"


async def _count_dead_letters(runtime: Runtime, service: str, consumed: list[str]) -> None:
    """Refresh the dead-letter and parked-event gauges; every consumed subject has a series (0 included), so an
    alert sees it."""
    for query, publish in ((_COUNT_DEAD_LETTERS, metrics.set_dead_letters), (_COUNT_PARKED, metrics.set_parked_events)):
        try:
            rows = await asyncio.wait_for(runtime.database.pool.fetch(query), 2)
        except Exception as exc:  # the gauge keeps its last value until the next refresh
            logger.warning("metrics: cannot count %s: %s", query.split("FROM ")[1].split()[0], exc)
            continue
        counts = dict.fromkeys(consumed, 0)
        counts.update({row[0]: int(row[1]) for row in rows})
        publish(service, counts)


async def _count_dead_letters_every(runtime: Runtime, service: str, consumed: list[str], seconds: float) -> None:
    while True:
        await _count_dead_letters(runtime, service, consumed)
        await asyncio.sleep(seconds)


async def _readiness_problem(runtime: Runtime | None, head: str | None) -> str | None:
    if runtime is None:
        return "Starting"
    if not runtime.bus.nc.is_connected:
        return "NATS is not connected"
    try:
        async with runtime.database.engine.connect() as conn:
            version = (
                await asyncio.wait_for(conn.execute(text("SELECT version_num FROM alembic_version")), 2)
            ).scalar()
    except Exception as exc:
        if any(isinstance(error, asyncpg.UndefinedTableError) for error in error_chain(exc)):
            return "Database migrations are not applied"  # reachable, but no alembic_version table yet
        logger.warning("readiness: database check failed: %s", exc)
        return "Database is not reachable"
    if version != head:
        return "Database migrations are not applied"
    return None
