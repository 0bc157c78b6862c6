"""The NATS connection: reconnects forever, ends the process if it closes, speaks under one identity."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
from collections.abc import Callable
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from ticketing_common.events import STREAMS

logger = logging.getLogger("ticketing.bus")

DUPLICATE_WINDOW_SECONDS = 120.0


def _terminate_process() -> None:
    logger.critical("NATS connection closed for good; stopping the process so it is restarted")
    os.kill(os.getpid(), signal.SIGTERM)


class BusConnection:
    """Our NATS connection, and whether we are closing it on purpose (then its closing does not end the process)."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.closing = False

    @property
    def is_connected(self) -> bool:
        """Whether NATS is reachable right now."""
        return bool(self.nc.is_connected)

    async def close(self) -> None:
        """Drain and close on purpose, without triggering the process-ending callback."""
        self.closing = True
        if self.nc.is_closed:
            return
        try:
            await asyncio.wait_for(self.nc.drain(), timeout=5)
        except Exception:  # a drain that fails still has to close the socket
            await self.nc.close()


def inbox_prefix(identity: str) -> str:
    """The reply inbox of an identity: the server lets each one subscribe to its own only (infra/k8s/base/nats)."""
    return f"_INBOX_{identity}"


async def connect(
    url: str,
    name: str,
    *,
    identity: str | None = None,
    nkey_seed: str | None = None,
    tls_ca_file: str | None = None,
    on_closed: Callable[[], None] | None = _terminate_process,
) -> BusConnection:
    """Connect with unlimited reconnects; a connection that closes unexpectedly ends the process.

    `nkey_seed` proves `identity` (a service's name, `provisioner`, `operator`) to the server, which then allows
    only what that identity may do; `tls_ca_file` verifies the server of a tls:// URL against a private CA.
    """
    connection: BusConnection | None = None

    async def disconnected() -> None:
        logger.warning("NATS disconnected; reconnecting")

    async def reconnected() -> None:
        logger.info("NATS reconnected")

    async def error(exc: Exception) -> None:
        logger.warning("NATS error: %s", exc)

    async def closed() -> None:
        if (connection is None or not connection.closing) and on_closed is not None:
            on_closed()

    options: dict[str, Any] = {}
    if identity is not None:
        options["inbox_prefix"] = inbox_prefix(identity)
    if nkey_seed is not None:
        options["nkeys_seed_str"] = nkey_seed
    if tls_ca_file is not None:
        options["tls"] = ssl.create_default_context(cafile=tls_ca_file)
    nc = await nats.connect(
        url,
        name=name,
        **options,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=2,
        allow_reconnect=True,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
        closed_cb=closed,
    )
    connection = BusConnection(nc)
    return connection


async def ensure_streams(js: JetStreamContext, *, replicas: int = 1, max_age: float = 0) -> None:
    """Create every stream of the catalog, or update it to the wanted config; safe from many replicas.

    No limit but max_age (0: none), so by default a stream holds every event ever published, which is what lets
    `ticketing replay` rebuild a replica from the first one; a limit set by hand is undone at the next start.
    """
    for name, subjects in STREAMS.items():
        config = StreamConfig(
            name=name,
            subjects=subjects,
            storage=StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            max_age=max_age or None,
        )
        try:
            await js.stream_info(name)
        except NotFoundError:
            try:
                await js.add_stream(config)
                continue
            except BadRequestError:  # another replica created it first
                pass
        await js.update_stream(config)
