"""pytest plugin: a real Postgres and nats-server per test run, a migrated database per service, apps with lifespans."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from nats.aio.client import Client as NATS
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from ticketing_common import bus
from ticketing_common.app import Runtime, ServiceSpec
from ticketing_common.migrations import schema_differences, upgrade
from ticketing_common.provision import listener_types, provision, service_name
from ticketing_dev.natsauth import OPERATOR, NatsAuth
from ticketing_dev.servers import NatsServer, PostgresServer
from ticketing_testing import TEST_JWT_KEY, EventCapture


@dataclass
class Servers:
    """The servers of this test run."""

    postgres: PostgresServer
    nats: NatsServer
    databases: dict[str, str] = field(default_factory=dict)

    @property
    def nats_auth(self) -> NatsAuth:
        """The broker's identities: the tests run with the cluster's authorization on."""
        assert self.nats.auth is not None
        return self.nats.auth

    async def connect_nats(self, identity: str = OPERATOR, **options: Any) -> NATS:
        """A connection to the test broker as one identity; the operator (the tests' admin) by default."""
        return await nats.connect(
            self.nats.url,
            nkeys_seed_str=self.nats_auth.seed(identity),
            inbox_prefix=bus.inbox_prefix(identity),
            **options,
        )

    def database(self, package: str) -> str:
        """The URL of the package's test database, created and migrated once per run."""
        if package not in self.databases:
            name = f"test_{package}".lower()
            url = self.postgres.create_database(name)
            upgrade(package, url)
            self.databases[package] = url
        return self.databases[package]


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    """Start Postgres and nats-server on free loopback ports; stop them at the end, pass or fail."""
    base = Path(tempfile.mkdtemp(prefix="ticketing-test-"))
    os.chmod(base, 0o755)  # the Postgres system user must reach its data directory when we are root
    postgres = PostgresServer(base / "pg")
    nats_server = NatsServer(base / "nats", auth=NatsAuth.generate())
    try:
        postgres.start()
        nats_server.start()
        yield Servers(postgres, nats_server)
    finally:
        nats_server.stop()
        postgres.stop()
        shutil.rmtree(base, ignore_errors=True)


async def truncate_all(url: str) -> None:
    """Empty every table but alembic_version, so each test starts clean."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            tables = (
                (
                    await conn.execute(
                        text(
                            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                        )
                    )
                )
                .scalars()
                .all()
            )
            if tables:
                names = ", ".join(f'"{table}"' for table in tables)
                await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


async def migrated_schema_differences(servers: Servers, package: str, metadata: MetaData) -> list[Any]:
    """How the package's database, as its migrations built it, differs from its models and the bus tables."""
    engine = create_async_engine(servers.database(package))
    try:
        async with engine.connect() as conn:
            differences: list[Any] = await conn.run_sync(schema_differences, metadata)
    finally:
        await engine.dispose()
    return differences


async def delete_streams(servers: Servers) -> None:
    """Remove every stream (and so every consumer) so no test sees another's events."""
    nc = await servers.connect_nats()
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name:
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()


@pytest.fixture
async def clean_state(servers: Servers) -> Servers:
    """Empty the databases migrated so far and the broker."""
    await asyncio.gather(*(truncate_all(url) for url in servers.databases.values()))
    await delete_streams(servers)
    return servers


@dataclass
class RunningService:
    """A service app running its lifespan, with an HTTP client over ASGI."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: Any
    manager: LifespanManager

    @property
    def runtime(self) -> Runtime:
        """What the lifespan wired: engine, sessions, bus."""
        runtime: Runtime = self.app.state.runtime
        return runtime

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        """The service's sessions."""
        return self.runtime.database.sessionmaker

    async def stop(self) -> None:
        """Close the client and run the lifespan's shutdown."""
        await self.client.aclose()
        await self.manager.__aexit__(None, None, None)


ServiceStarter = Callable[..., Awaitable[RunningService]]


async def provision_service(servers: Servers, spec: ServiceSpec, settings: Any) -> None:
    """What the cluster's `provision` initContainer does, as the provisioner: streams and the service's durables."""
    nc = await servers.connect_nats("provisioner")
    try:
        await provision(
            nc.jetstream(),
            service=spec.name,
            listeners=listener_types(spec.package),
            ack_wait=settings.nats_ack_wait_seconds,
            replicas=settings.nats_stream_replicas,
        )
    finally:
        await nc.close()


def service_settings(settings_cls: type[Any], servers: Servers, package: str, **overrides: Any) -> Any:
    """Settings for a service under test: its test database, the test broker under its own identity, the JWT key.

    A service of the catalog speaks as itself, with exactly the rights the cluster gives it; a test-only app (the
    common tests' probe) as the operator.
    """
    identity = service_name(package)
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": servers.database(package),
        "nats_url": servers.nats.url,
        "nats_nkey_seed": servers.nats_auth.seeds.get(identity) or servers.nats_auth.seed(OPERATOR),
        "nats_client_id": f"{package}-test",
        "jwt_key": TEST_JWT_KEY,
        "cookie_secure": False,
        "outbox_poll_seconds": 0.2,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return settings_cls(**values)


@pytest.fixture
async def start_service(clean_state: Servers) -> AsyncIterator[ServiceStarter]:
    """Start a service app (factory, settings class, package) against the test servers; stopped after the test."""
    running: list[RunningService] = []

    async def start(
        factory: Callable[[Any], FastAPI], settings_cls: type[Any], package: str, **overrides: Any
    ) -> RunningService:
        settings = service_settings(settings_cls, clean_state, package, **overrides)
        app = factory(settings)
        await provision_service(clean_state, app.state.spec, settings)
        manager = LifespanManager(app, startup_timeout=30, shutdown_timeout=30)
        await manager.__aenter__()
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        service = RunningService(app, client, settings, manager)
        running.append(service)
        return service

    yield start
    for service in reversed(running):
        await service.stop()


@pytest.fixture
async def events(clean_state: Servers) -> AsyncIterator[EventCapture]:
    """Every event published during the test, by subject."""
    nc = await clean_state.connect_nats()
    capture = EventCapture()
    await capture.attach(nc)
    yield capture
    await nc.close()


@pytest.fixture
async def nats_client(clean_state: Servers) -> AsyncIterator[NATS]:
    """A NATS connection to the test broker as the operator (free to publish and inspect), with the streams made."""
    nc = await clean_state.connect_nats()
    await bus.ensure_streams(nc.jetstream())
    yield nc
    await nc.close()


@pytest.fixture
def operator_identity(servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The `ticketing` command's bus identity for a test: the operator's seed file, named by TICKETING_NATS_NKEY_FILE."""
    path: Path = servers.nats_auth.write_seeds(tmp_path / "nats-keys")[OPERATOR]
    monkeypatch.setenv("TICKETING_NATS_NKEY_FILE", str(path))
    return path
