"""Parked events: one that arrives before its predecessor waits in a table, acked, instead of in its consumer.

A gap nak'd back to JetStream comes round again and again, and while a burst of them is redelivered the other
entities' events on the same consumer wait behind it (the chaos run's six-minute stall). Parked, it costs one row:

- A listener that meets EventOutOfOrder parks the event (a row keyed by consumer and message id) and acks it. The
  inbox claims it only when it is applied, so the inbox still means "applied"; a redelivery parks nothing new.
- After a transaction applied events, the events parked for those entities (by any of the service's consumers) are
  tried again at once, in publish order, as long as applying one lets the next through.
- A periodic retry tries what is due with a growing delay: the backstop for a predecessor that another replica
  applied, or that committed while its successor was being parked.
- One still waiting after PARKED_MAX_AGE_SECONDS becomes a dead letter, like a poison message after max_deliver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
from pydantic import ValidationError

from ticketing_common import metrics
from ticketing_common.errors import OutageLog, outage_cause
from ticketing_common.requestid import accept_request_id, set_request_id
from ticketing_common.uow import Database, UnitOfWork

if TYPE_CHECKING:
    from ticketing_common.listener import Listener

logger = logging.getLogger("ticketing.parking")

# The inbox records what was applied (or dead-lettered), not what waits: a parked event is claimed when it is
# applied. A redelivery of one still parked parks nothing new; one of an event applied since is a duplicate.
_PARK = """
INSERT INTO parked_events (consumer, message_id, entity, subject, stream_sequence, payload, headers, reason, retry_at)
SELECT $1, p.message_id, p.entity, $3, p.sequence, p.payload, p.headers::jsonb, p.reason,
       now() + make_interval(secs => $9)
FROM unnest($2::text[], $4::text[], $5::bigint[], $6::bytea[], $7::text[], $8::text[])
    AS p(message_id, entity, sequence, payload, headers, reason)
ON CONFLICT DO NOTHING
"""
_CLAIM_ONE = "INSERT INTO inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING message_id"
_COLUMNS = "consumer, message_id, entity, subject, stream_sequence, payload, headers, reason, attempts, parked_at"
_FOR_ENTITIES = (
    f"SELECT {_COLUMNS} FROM parked_events WHERE entity = ANY($1::text[])"
    " ORDER BY stream_sequence NULLS LAST, parked_at FOR UPDATE SKIP LOCKED"
)
_DUE = (
    f"SELECT {_COLUMNS} FROM parked_events WHERE retry_at <= now()"
    " ORDER BY stream_sequence NULLS LAST, parked_at LIMIT $1 FOR UPDATE SKIP LOCKED"
)
_EXPIRED = (
    f"SELECT {_COLUMNS}, extract(epoch FROM now() - parked_at) AS waited FROM parked_events"
    " WHERE parked_at <= now() - make_interval(secs => $1) ORDER BY parked_at LIMIT $2 FOR UPDATE SKIP LOCKED"
)
_UNPARK = "DELETE FROM parked_events p USING unnest($1::text[], $2::text[]) AS k(consumer, message_id)"
_UNPARK += " WHERE p.consumer = k.consumer AND p.message_id = k.message_id"
_BACK_OFF = """
UPDATE parked_events p SET attempts = p.attempts + 1,
    retry_at = now() + make_interval(secs => least($3::float8 * 2 ^ p.attempts::float8, $4::float8))
FROM unnest($1::text[], $2::text[]) AS k(consumer, message_id)
WHERE p.consumer = k.consumer AND p.message_id = k.message_id
"""


@dataclass(frozen=True)
class Gap:
    """An event its listener found out of order, to be parked."""

    message_id: str
    entity: str
    stream_sequence: int | None
    payload: bytes
    headers: dict[str, str]
    reason: str


class Parking:
    """The parked events of one service: every listener of the process registers, so any can apply any's events."""

    # The periodic retry's tick, its first delay and its longest; how many rows one round takes at most.
    tick_seconds: float = 1.0
    first_retry_seconds: float = 1.0
    max_retry_seconds: float = 30.0
    round_limit: int = 500

    def __init__(self, database: Database, *, max_age_seconds: float = 300.0) -> None:
        self.database = database
        self.max_age_seconds = max_age_seconds
        self.listeners: dict[str, Listener[Any]] = {}
        # False only once a look at the table found it empty and this process parked nothing since: then applying
        # an event costs no query here. Another replica's parked events are seen by the next tick.
        self.maybe_waiting = True
        self.outages = OutageLog("retried next tick")
        self._task: asyncio.Task[None] | None = None

    def register(self, listener: Listener[Any]) -> None:
        """Let this parking apply the listener's parked events."""
        self.listeners[listener.durable] = listener

    async def park(self, uow: UnitOfWork, consumer: str, subject: str, gaps: Sequence[Gap]) -> None:
        """Claim and park the gaps inside the caller's transaction."""
        if not gaps:
            return
        conn = await uow.connection()
        await conn.execute(
            _PARK,
            consumer,
            [gap.message_id for gap in gaps],
            subject,
            [gap.entity for gap in gaps],
            [gap.stream_sequence for gap in gaps],
            [gap.payload for gap in gaps],
            [json.dumps(gap.headers) for gap in gaps],
            [gap.reason[:2000] for gap in gaps],
            self.first_retry_seconds,
        )
        self.maybe_waiting = True

    async def applied(self, entities: Iterable[str]) -> None:
        """Events of these entities were just committed: apply what waited for them, and what that lets through."""
        if not self.maybe_waiting:
            return  # the common case: nothing is parked, and the entities are not even listed
        pending = set(entities)
        rounds = 0
        while pending and self.maybe_waiting and rounds < 100:
            rounds += 1
            try:
                pending = await self._retry(_FOR_ENTITIES, [sorted(pending)], back_off=False)
            except Exception as exc:  # the periodic retry takes it up
                self._failed("retry after apply", exc)
                return

    async def _retry(self, query: str, args: list[Any], *, back_off: bool) -> set[str]:
        """Apply the parked rows the query locks, in its order; returns the entities of those applied."""
        applied: set[str] = set()
        async with self.database.transaction() as uow:
            conn = await uow.connection()
            rows = await conn.fetch(query, *args)
            if not rows:
                return applied
            done: list[tuple[str, str]] = []
            waiting: list[tuple[str, str]] = []
            for row in rows:
                key = (row["consumer"], row["message_id"])
                if await self._apply(uow, conn, row):
                    done.append(key)
                    applied.add(row["entity"])
                else:
                    waiting.append(key)
            if done:
                await conn.execute(_UNPARK, [k[0] for k in done], [k[1] for k in done])
            if waiting and back_off:
                await conn.execute(
                    _BACK_OFF,
                    [k[0] for k in waiting],
                    [k[1] for k in waiting],
                    self.first_retry_seconds,
                    self.max_retry_seconds,
                )
        return applied

    async def _apply(self, uow: UnitOfWork, conn: asyncpg.Connection, row: asyncpg.Record) -> bool:
        """Try one parked event under a savepoint: True if its handler ran (applied, or found it stale)."""
        from ticketing_common.listener import EventOutOfOrder  # the listener module imports this one

        listener = self.listeners.get(row["consumer"])
        if listener is None:  # a consumer this process does not run: its own service's replicas will
            return False
        try:
            event = listener.event_type.model_validate_json(row["payload"])
        except ValidationError:  # parked by an older release whose payloads this one refuses: the sweep keeps it
            return False
        set_request_id(_request_id(row))
        savepoint = conn.transaction()
        await savepoint.start()
        try:
            # Claimed under the savepoint: a gap takes its claim back with it.
            if await conn.fetchval(_CLAIM_ONE, row["consumer"], row["message_id"]) is not None:
                await listener.handle_checked(uow, event)
                await uow.session.flush()
            # else a redelivery of it was applied meanwhile, as the consumer's own: only its row goes
            await savepoint.commit()
        except Exception as exc:
            await savepoint.rollback()
            uow.session.expunge_all()
            if outage_cause(exc) is not None:
                raise
            if not isinstance(exc, EventOutOfOrder):
                logger.exception("%s: parked event %s failed", row["consumer"], row["message_id"])
            return False
        metrics.EVENTS_HANDLED.labels(row["consumer"], "unparked").inc()
        return True

    async def retry_due(self) -> None:
        """One round of the periodic retry: whatever is due, then whatever that let through."""
        found = await self.database.pool.fetchval("SELECT EXISTS (SELECT 1 FROM parked_events)")
        self.maybe_waiting = bool(found)
        if not found:
            return
        applied = await self._retry(_DUE, [self.round_limit], back_off=True)
        await self.applied(applied)

    async def expire(self) -> int:
        """Dead-letter the events that waited longer than max_age_seconds; returns how many."""
        from ticketing_common.listener import DeadLetterRecord, record_dead_letter

        async with self.database.transaction() as uow:
            conn = await uow.connection()
            rows = await conn.fetch(_EXPIRED, self.max_age_seconds, self.round_limit)
            for row in rows:
                logger.error(
                    "%s: dead-lettering parked %s: %s, still waiting after %.0f s",
                    row["consumer"],
                    row["message_id"],
                    row["reason"],
                    row["waited"],
                )
                await record_dead_letter(
                    uow,
                    DeadLetterRecord(
                        consumer=row["consumer"],
                        subject=row["subject"],
                        message_id=row["message_id"],
                        stream_sequence=row["stream_sequence"],
                        deliveries=row["attempts"] + 1,
                        reason=f"{row['reason']} (parked {row['waited']:.0f} s; its predecessor never arrived)",
                        payload=bytes(row["payload"]),
                        headers=_headers(row),
                    ),
                )
            if rows:
                await conn.execute(_UNPARK, [r["consumer"] for r in rows], [r["message_id"] for r in rows])
        for row in rows:
            metrics.EVENTS_HANDLED.labels(row["consumer"], "dead_lettered").inc()
        return len(rows)

    async def start(self) -> None:
        """Run the periodic retry and expiry in the background."""
        self._task = asyncio.create_task(self._run(), name="parked-events")

    async def stop(self) -> None:
        """Stop the periodic retry."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_seconds)
            try:
                await self.retry_due()
                if self.maybe_waiting:
                    await self.expire()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed("periodic retry", exc)

    def _failed(self, what: str, exc: Exception) -> None:
        cause = outage_cause(exc)
        if cause is None:
            logger.exception("parked events: %s failed", what)
        else:
            self.outages.record(f"parked events' {what}", cause, exc)


def _headers(row: asyncpg.Record) -> dict[str, str]:
    raw = row["headers"]
    value = json.loads(raw) if isinstance(raw, str) else raw
    return value if isinstance(value, dict) else {}


def _request_id(row: asyncpg.Record) -> str | None:
    raw = _headers(row).get("X-Request-ID")
    return accept_request_id(raw) if isinstance(raw, str) and raw else None
