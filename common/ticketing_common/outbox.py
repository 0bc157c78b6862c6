"""The transactional outbox: events commit with the state change (UnitOfWork.enqueue), and a relay publishes them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import asyncpg
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from ticketing_common import metrics
from ticketing_common.db import listen_forever
from ticketing_common.events import Event
from ticketing_common.migrations import OUTBOX_CHANNEL
from ticketing_common.requestid import current_request_id

logger = logging.getLogger("ticketing.outbox")


_CLAIM_UNSENT = (
    "SELECT id, subject, payload, request_id FROM outbox WHERE sent_at IS NULL "
    "ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED"
)
# The ids go as text[]: asyncpg has a built-in codec for it, while a uuid[] parameter made it run its type
# introspection query (tens of milliseconds) on each pooled connection's first pass, a stall every event
# behind that pass waited out (bench/: propagation p99).
_MARK_SENT = "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::text[]::uuid[])"
_PRUNE_OUTBOX = (
    "DELETE FROM outbox WHERE id IN "
    "(SELECT id FROM outbox WHERE sent_at < now() - make_interval(secs => $1) LIMIT $2 FOR UPDATE SKIP LOCKED)"
)
_PRUNE_INBOX = (
    "DELETE FROM inbox WHERE (consumer, message_id) IN "
    "(SELECT consumer, message_id FROM inbox WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2 "
    "FOR UPDATE SKIP LOCKED)"
)
_PRUNE_BATCH = 10_000  # rows another replica's prune holds are skipped, so replicas never wait on each other
# How often a relay prunes; a shorter retention prunes as often as it is long.
PRUNE_EVERY_SECONDS = 3600.0


def with_event(change_sql: str, arg_count: int) -> str:
    """One statement that makes a change and writes the event announcing it.

    A single statement is atomic on its own, so the pair needs no BEGIN/COMMIT: one round trip instead of four on
    the hottest writes. `change_sql` takes `$1..$arg_count` and ends with RETURNING; the event's four values
    (see event_args) follow its arguments, and the statement returns the change's rows.
    """
    n = arg_count
    return (
        f"WITH change AS ({change_sql}), event AS ("
        f"INSERT INTO outbox (id, subject, payload, request_id) VALUES (${n + 1}, ${n + 2}, ${n + 3}, ${n + 4})) "
        "SELECT * FROM change"
    )


def event_args(event: Event) -> tuple[object, ...]:
    """The values with_event() appends after the change's own arguments."""
    return (event.event_id, event.subject, event.to_bytes(), current_request_id())


class OutboxRelay:
    """Publishes committed outbox rows in commit order, awaiting each PubAck, then marks them sent.

    It is woken by NOTIFY right after a commit and polls as a fallback; rows are claimed with
    FOR UPDATE SKIP LOCKED so several replicas never publish the same row at the same time.
    """

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        poll_seconds: float = 1.0,
        batch_size: int = 500,
        retention_seconds: int = 86400,
    ) -> None:
        self.engine = engine  # for the LISTEN connection's address
        self.pool = pool
        self.js = js
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.retention_seconds = retention_seconds
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Run the relay and its LISTEN connection in the background."""
        self._tasks = [
            asyncio.create_task(self._run(), name="outbox-relay"),
            asyncio.create_task(self._listen(), name="outbox-listen"),
            asyncio.create_task(self._prune_forever(), name="outbox-prune"),
        ]

    async def stop(self) -> None:
        """Finish the batch in flight, then stop."""
        self._stopping = True
        self._wake.set()
        if self._tasks:
            relay, *others = self._tasks
            for task in others:
                task.cancel()
            try:
                await asyncio.wait_for(relay, timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                relay.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task

    def wake(self) -> None:
        """Ask for a publish pass now."""
        self._wake.set()

    async def _listen(self) -> None:
        # Every (re)connect wakes a pass, to catch up on anything committed while we were not listening.
        await listen_forever(self.engine, OUTBOX_CHANNEL, lambda _: self._wake.set(), on_connect=self._wake.set)

    async def _prune_forever(self) -> None:
        # Its own task, so a large prune never delays a publish.
        while True:
            try:
                await self.prune()
            except Exception as exc:
                logger.warning("outbox relay could not prune: %s", exc)
            await asyncio.sleep(min(PRUNE_EVERY_SECONDS, self.retention_seconds))

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            self._wake.clear()
            try:
                published = await self.publish_pending()
                backoff = 0.1
            except Exception as exc:
                logger.warning("outbox relay could not publish: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if published >= self.batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)

    async def publish_pending(self) -> int:
        """Publish one batch of unsent rows; returns how many were published.

        The statements run on the runtime's asyncpg pool, not through SQLAlchemy: a pass per commit
        is the common case at low rates, and the ORM layer's per-statement cost made each pass several times
        dearer than the work itself (and the relay shares the event loop with the requests).
        """
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM_UNSENT, self.batch_size)
            if not rows:
                return 0
            sent: list[uuid.UUID] = []
            try:
                # Pipelined: written in order on one connection, so JetStream stores them in commit order.
                futures = []
                for row in rows:
                    headers = {"Nats-Msg-Id": str(row["id"])}
                    if row["request_id"]:
                        headers["X-Request-ID"] = row["request_id"]
                    futures.append(await self.js.publish_async(row["subject"], bytes(row["payload"]), headers=headers))
                results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), timeout=5)
                for row, result in zip(rows, results, strict=True):
                    if isinstance(result, BaseException):
                        logger.warning("publish of %s %s failed: %s", row["subject"], row["id"], result)
                        break
                    sent.append(row["id"])
            finally:
                if sent:
                    await conn.execute(_MARK_SENT, [str(event_id) for event_id in sent])
                    metrics.EVENTS_PUBLISHED.inc(len(sent))
            if len(sent) < len(rows):
                raise RuntimeError(f"{len(rows) - len(sent)} events not acknowledged by JetStream")
            return len(sent)

    async def prune(self) -> int:
        """Delete sent outbox rows older than the retention, and inbox records older than 7 times that.

        Sent rows stay a while so an operator can see what went out; inbox records are what makes a redelivered
        event a no-op, so they stay much longer than any redelivery could take. Deletes go in batches so no
        transaction holds many row locks. Returns how many rows went.
        """
        deleted = 0
        async with self.pool.acquire() as conn:
            for statement, seconds in (
                (_PRUNE_OUTBOX, self.retention_seconds),
                (_PRUNE_INBOX, 7 * self.retention_seconds),
            ):
                while True:
                    status = await conn.execute(statement, float(seconds), _PRUNE_BATCH)
                    count = int(status.rsplit(" ", 1)[1])
                    deleted += count
                    if count < _PRUNE_BATCH:
                        break
        if deleted:
            logger.info("pruned %d sent outbox rows and inbox records", deleted)
        return deleted
