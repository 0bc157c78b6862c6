"""Test helpers for the ticketing services: users, waiting, and event capture (fixtures live in plugin)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from ticketing_common.auth import SESSION_COOKIE, create_token
from ticketing_common.events import STREAMS
from ticketing_common.ids import new_id
from ticketing_common.uow import Database

TEST_JWT_KEY = "test-only-jwt-key-0123456789abcdef"

T = TypeVar("T")


@dataclass(frozen=True)
class TestUser:
    """A signed-in user: its id, email, token and the Cookie header that carries it."""

    __test__ = False

    id: uuid.UUID
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        """The request headers that sign this user in."""
        return {"Cookie": f"{SESSION_COOKIE}={self.token}"}


def make_user(
    *, email: str | None = None, key: str = TEST_JWT_KEY, ttl_seconds: int = 3600, user_id: uuid.UUID | None = None
) -> TestUser:
    """A user with a unique id (or the given one) and email, signed in with a valid token."""
    user_id = user_id or uuid.uuid4()
    email = email or f"user-{user_id.hex[:12]}@example.com"
    return TestUser(user_id, email, create_token(user_id=user_id, email=email, key=key, ttl_seconds=ttl_seconds))


def id_minted(seconds_ago: float) -> uuid.UUID:
    """A UUIDv7 entity id as a producer would have minted it `seconds_ago` (negative: in the future)."""
    millis = round((time.time() - seconds_ago) * 1000)
    return uuid.UUID(int=(new_id().int & ((1 << 80) - 1)) | (millis << 80))


async def eventually(check: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.05) -> T:
    """Retry an async check until it returns a truthy value without failing an assertion; return that value."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = await check()
            if result:
                return result
            last_error = AssertionError(f"check returned {result!r}")
        except AssertionError as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout}s: {last_error}") from last_error
        await asyncio.sleep(interval)


async def parked(
    js: JetStreamContext, database: Database, stream: str, durable: str, *, count: int = 1, timeout: float = 10.0
) -> int:
    """Wait until the consumer's service has parked `count` of its events, and the consumer has acked them all.

    The evidence a negative check on an out-of-order event needs: the listener has seen the event and set it aside
    (ticketing_common.parking), so "not applied" cannot be true merely because nothing was delivered yet.
    """

    async def check() -> int:
        held = await database.pool.fetchval("SELECT count(*) FROM parked_events WHERE consumer = $1", durable)
        info = await js.consumer_info(stream, durable)
        waiting = (info.num_pending or 0) + (info.num_ack_pending or 0)
        return held if held >= count and waiting == 0 else 0

    return await eventually(check, timeout=timeout)


@dataclass
class CapturedEvent:
    """An event seen on the bus: its subject, decoded body and headers."""

    subject: str
    data: dict[str, Any]
    headers: dict[str, str]


@dataclass
class EventCapture:
    """Records every event published on the catalog's subjects during a test."""

    events: list[CapturedEvent] = field(default_factory=list)

    def handle(self, msg: Msg) -> None:
        """Record one message."""
        try:
            data = json.loads(msg.data)
        except ValueError:
            data = {"_raw": msg.data.decode(errors="replace")}
        self.events.append(CapturedEvent(msg.subject, data, dict(msg.headers or {})))

    def of(self, subject: str) -> list[dict[str, Any]]:
        """The bodies seen on one subject, in order."""
        return [event.data for event in self.events if event.subject == subject]

    async def wait_for(self, subject: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least `count` events on the subject were seen; return them."""

        async def enough() -> list[dict[str, Any]]:
            found = self.of(subject)
            return found if len(found) >= count else []

        return await eventually(enough, timeout=timeout)

    async def attach(self, nc: NATS) -> None:
        """Subscribe to every subject of the catalog on this connection."""

        async def on_msg(msg: Msg) -> None:
            self.handle(msg)

        # Only the catalog's subjects: a ">" subscription would also see consumer deliveries to inboxes.
        for subjects in STREAMS.values():
            for subject in subjects:
                await nc.subscribe(subject, cb=on_msg)
        await nc.flush()
