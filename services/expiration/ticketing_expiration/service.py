"""expiration use cases: schedule, cancel and fire order timers; plain async functions over a session."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from ticketing_common.db import driver_connection
from ticketing_common.events import ExpirationComplete
from ticketing_common.outbox import enqueue
from ticketing_expiration.models import ExpirationJob

# NOTIFY channel that wakes every replica's scheduler when a job is stored; the payload is its due time (epoch s).
EXPIRATION_CHANNEL = "ticketing_expiration"

_PENDING = (ExpirationJob.fired_at.is_(None), ExpirationJob.cancelled_at.is_(None))


@dataclass(frozen=True)
class NextDue:
    """The earliest pending job: when it is due (epoch seconds) and how far away that is on the database clock."""

    at_epoch: float
    in_seconds: float


# One round trip on the hot path: store the job if it is new, and NOTIFY its due time only then.
_SCHEDULE = f"""
WITH stored AS (
    INSERT INTO expiration_jobs (order_id, version, expires_at) VALUES ($1, $2, $3)
    ON CONFLICT (order_id) DO NOTHING
    RETURNING expires_at
)
SELECT pg_notify('{EXPIRATION_CHANNEL}', extract(epoch FROM expires_at)::text) FROM stored
"""


async def schedule_expiration(
    *, session: AsyncSession, order_id: uuid.UUID, version: int, expires_at: datetime
) -> bool:
    """Store the job for a new order; a duplicate, or an order already cancelled (tombstone), changes nothing.

    The NOTIFY is delivered at commit to every replica's scheduler (this one's too), and dropped on rollback.
    """
    conn = await driver_connection(session)
    return bool(await conn.fetch(_SCHEDULE, order_id, version, expires_at))


async def cancel_expiration(*, session: AsyncSession, order_id: uuid.UUID, version: int) -> None:
    """Drop an order's job so it never fires; if the create has not arrived yet, leave a tombstone that outranks it.

    This is the version rule without the wait: an older or equal version is ignored, a newer one is applied, and a
    gap (cancel before create) is applied at once as a tombstone, because a cancelled order needs no timer and so
    nothing from the create. A job that already fired stays fired (orders ignores expiry of a cancelled order).
    """
    stmt = pg_insert(ExpirationJob).values(order_id=order_id, version=version, cancelled_at=func.now())
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[ExpirationJob.order_id],
            set_={
                "version": stmt.excluded.version,
                "cancelled_at": func.coalesce(ExpirationJob.cancelled_at, stmt.excluded.cancelled_at),
            },
            where=ExpirationJob.version < stmt.excluded.version,
        )
    )


async def fire_due_expirations(*, session: AsyncSession, limit: int) -> list[uuid.UUID]:
    """Claim up to `limit` due jobs, mark them fired and stage expiration.complete for each, in one transaction.

    FOR UPDATE SKIP LOCKED lets replicas claim disjoint batches; a job is marked fired in the same transaction as its
    event, so it is published exactly once whoever claims it, and a crash before commit leaves it due.
    """
    claimed = (
        await session.execute(
            text(
                """
                WITH due AS (
                    SELECT order_id FROM expiration_jobs
                    WHERE fired_at IS NULL AND cancelled_at IS NULL AND expires_at <= now()
                    ORDER BY expires_at
                    LIMIT :limit
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE expiration_jobs AS job SET fired_at = clock_timestamp()
                FROM due WHERE job.order_id = due.order_id
                RETURNING job.order_id, job.expires_at
                """
            ),
            {"limit": limit},
        )
    ).all()
    fired = [row.order_id for row in sorted(claimed, key=lambda row: row.expires_at)]
    for order_id in fired:
        enqueue(session, ExpirationComplete(order_id=order_id))
    return fired


async def next_due(*, session: AsyncSession) -> NextDue | None:
    """The earliest pending job, measured on the database clock (the one the claim compares against)."""
    earliest = func.min(ExpirationJob.expires_at)
    row = (
        await session.execute(
            select(
                func.extract("epoch", earliest),
                func.extract("epoch", earliest - func.clock_timestamp()),
            ).where(*_PENDING)
        )
    ).one()
    if row[0] is None:
        return None
    return NextDue(at_epoch=float(row[0]), in_seconds=float(row[1]))
