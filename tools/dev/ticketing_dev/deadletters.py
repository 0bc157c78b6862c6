"""`ticketing deadletters`: list, show, retry and drop the events each service's consumers set aside.

They live in each service's `dead_letters` table (invalid payloads, events past max deliver, and, later, parked
events that never resolved). A retry runs the event through the consumer's own listener, the service's code, in one
transaction with its inbox record and the dead letter's resolution: so versions still guard ordering, an event is
applied at most once, and what the handler publishes goes through the service's outbox (its relay sends it). A retry
that fails (a version still missing, a handler error) changes nothing and says why.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import asyncpg
from pydantic import ValidationError

from ticketing_common.app import ServiceSpec
from ticketing_common.db import asyncpg_dsn, make_engine, make_sessionmaker
from ticketing_common.events import EVENT_TYPES
from ticketing_common.listener import EventOutOfOrder, Listener, ListenerWiring
from ticketing_common.requestid import set_request_id
from ticketing_common.uow import Database

# The services that consume events, and so may hold dead letters.
CONSUMING_SERVICES = sorted({service for event in EVENT_TYPES.values() for service in event.consumers})

_COLUMNS = (
    "id, consumer, subject, message_id, stream_sequence, deliveries, reason, payload, headers, created_at, "
    "resolved_at, resolution, resolved_by, resolution_note"
)


class DeadLetterError(Exception):
    """Something the operator can act on: printed as one line."""


@dataclass(frozen=True)
class DeadLetterRow:
    """One dead letter as the commands show it."""

    service: str
    id: int
    consumer: str
    subject: str
    message_id: str | None
    stream_sequence: int | None
    deliveries: int
    reason: str
    payload: bytes
    headers: dict[str, str]
    created_at: datetime
    resolved_at: datetime | None
    resolution: str | None
    resolved_by: str | None
    resolution_note: str | None

    @classmethod
    def from_record(cls, service: str, record: asyncpg.Record) -> DeadLetterRow:
        """From a row of _COLUMNS."""
        values = dict(record)
        headers = values.pop("headers")
        values["headers"] = json.loads(headers) if isinstance(headers, str) else dict(headers or {})
        values["payload"] = bytes(values["payload"])
        return cls(service=service, **values)


def check_service(service: str) -> None:
    """Refuse a name that is not a consuming service, before importing anything by it."""
    if service not in CONSUMING_SERVICES:
        raise DeadLetterError(f"no service named {service!r} consumes events; known: {', '.join(CONSUMING_SERVICES)}")


async def _connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(asyncpg_dsn(url), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DeadLetterError(f"cannot reach the database at {url.split('@')[-1]}: {exc}") from None


async def list_dead_letters(service: str, url: str, *, include_resolved: bool = False) -> list[DeadLetterRow]:
    """A service's dead letters, oldest first; only those waiting for an operator unless include_resolved."""
    conn = await _connect(url)
    try:
        where = "" if include_resolved else "WHERE resolved_at IS NULL"
        records = await conn.fetch(f"SELECT {_COLUMNS} FROM dead_letters {where} ORDER BY id")
    finally:
        await conn.close()
    return [DeadLetterRow.from_record(service, record) for record in records]


async def get_dead_letter(service: str, url: str, dead_letter_id: int) -> DeadLetterRow:
    """One dead letter, or DeadLetterError."""
    conn = await _connect(url)
    try:
        record = await conn.fetchrow(f"SELECT {_COLUMNS} FROM dead_letters WHERE id = $1", dead_letter_id)
    finally:
        await conn.close()
    if record is None:
        raise DeadLetterError(f"{service} has no dead letter {dead_letter_id}")
    return DeadLetterRow.from_record(service, record)


async def drop_dead_letter(service: str, url: str, dead_letter_id: int, *, operator: str, reason: str) -> None:
    """Mark a waiting dead letter dropped, with who and why; the event is not applied."""
    conn = await _connect(url)
    try:
        async with conn.transaction():
            resolution = await conn.fetchval(
                "SELECT coalesce(resolution, '') FROM dead_letters WHERE id = $1 FOR UPDATE", dead_letter_id
            )
            _check_waiting(service, dead_letter_id, resolution)
            await conn.execute(_RESOLVE, dead_letter_id, "dropped", operator, reason)
    finally:
        await conn.close()


_RESOLVE = (
    "UPDATE dead_letters SET resolved_at = now(), resolution = $2, resolved_by = $3, resolution_note = $4 WHERE id = $1"
)


def _check_waiting(service: str, dead_letter_id: int, resolution: str | None) -> None:
    if resolution is None:
        raise DeadLetterError(f"{service} has no dead letter {dead_letter_id}")
    if resolution:
        raise DeadLetterError(f"dead letter {dead_letter_id} of {service} was already {resolution}")


def service_spec(service: str, url: str) -> ServiceSpec:
    """The service's own ServiceSpec (its listeners, its replicas), from its app factory; the app is never started."""
    check_service(service)
    app_module = importlib.import_module(f"ticketing_{service}.app")
    settings_module = importlib.import_module(f"ticketing_{service}.settings")
    settings = settings_module.Settings(
        environment="local",
        database_url=url,
        nats_url="nats://127.0.0.1:4222",  # never connected: the app's lifespan does not run
        nats_client_id=f"ticketing-cli-{service}",
        jwt_key="unused-by-the-operator-commands!",
        log_level="WARNING",
    )
    spec: ServiceSpec = app_module.create_app(settings).state.spec
    return spec


def service_listeners(spec: ServiceSpec, database: Database) -> list[Listener[Any]]:
    """The service's listeners, built as its lifespan builds them, over the given database.

    Only handle() is called, which works on the unit of work alone; nothing here binds a consumer or touches the bus.
    """
    wiring = ListenerWiring(service=spec.name, database=database, js=cast(Any, None))
    return [make_listener(wiring) for make_listener in spec.listeners]


async def retry_dead_letter(service: str, url: str, dead_letter_id: int, *, operator: str, note: str) -> str:
    """Apply a waiting dead letter through its consumer's handler; returns what happened, or DeadLetterError."""
    engine = make_engine(url, pool_size=1)
    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=2)
    database = Database(engine, make_sessionmaker(engine), pool)
    try:
        listeners = {listener.durable: listener for listener in service_listeners(service_spec(service, url), database)}
        try:
            async with database.transaction() as uow:
                conn = await uow.connection()
                record = await conn.fetchrow(
                    f"SELECT {_COLUMNS} FROM dead_letters WHERE id = $1 FOR UPDATE", dead_letter_id
                )
                if record is None:
                    raise DeadLetterError(f"{service} has no dead letter {dead_letter_id}")
                row = DeadLetterRow.from_record(service, record)
                _check_waiting(service, dead_letter_id, row.resolution or "")
                listener = listeners.get(row.consumer)
                if listener is None:
                    raise DeadLetterError(f"{service} has no consumer {row.consumer} any more; drop it instead")
                try:
                    event = listener.event_type.model_validate_json(row.payload)
                except ValidationError as exc:
                    raise DeadLetterError(
                        f"the payload is still invalid for {row.subject} ({exc.error_count()} errors); drop it"
                    ) from None
                set_request_id(row.headers.get("X-Request-ID"))
                if row.message_id is not None:
                    # Where the inbox was pruned since, the retry claims the event again, as its first delivery did.
                    await conn.execute(
                        "INSERT INTO inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        row.consumer,
                        row.message_id,
                    )
                await listener.handle(event, uow)
                await conn.execute(_RESOLVE, dead_letter_id, "retried", operator, note or None)
        except EventOutOfOrder as exc:
            raise DeadLetterError(
                f"still out of order ({exc}); retry once the missing event is handled, or drop it"
            ) from None
        except DeadLetterError:
            raise
        except Exception as exc:
            raise DeadLetterError(f"the handler failed again: {exc!r}; nothing changed") from None
        return f"applied {row.subject} {row.message_id or ''} through {row.consumer}".rstrip()
    finally:
        await pool.close()
        await engine.dispose()
