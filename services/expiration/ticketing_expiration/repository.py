"""expiration queries: every statement the service runs, and nothing else."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert

from ticketing_common.uow import UnitOfWork
from ticketing_expiration.models import ExpirationJob

# NOTIFY channel that wakes every replica's scheduler when a job is stored; the payload is its due time (epoch s).
EXPIRATION_CHANNEL = "ticketing_expiration"

# Raw asyncpg on the transaction's connection: this runs once per order.created, and SQLAlchemy's per-statement
# CPU cost more than the statement (bench/). One round trip: store the job if it is new, and NOTIFY its due time
# only then (delivered at commit, dropped on rollback).
_SCHEDULE = f"""
WITH stored AS (
    INSERT INTO expiration_jobs (order_id, version, expires_at) VALUES ($1, $2, $3)
    ON CONFLICT (order_id) DO NOTHING
    RETURNING expires_at
)
SELECT pg_notify('{EXPIRATION_CHANNEL}', extract(epoch FROM expires_at)::text) FROM stored
"""

# FOR UPDATE SKIP LOCKED lets replicas claim disjoint batches.
_CLAIM_DUE = text(
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
)

_PENDING = (ExpirationJob.fired_at.is_(None), ExpirationJob.cancelled_at.is_(None))


async def insert_job(uow: UnitOfWork, *, order_id: uuid.UUID, version: int, expires_at: datetime) -> bool:
    """Store a new job and NOTIFY its due time; False if the order already has a job (or a tombstone)."""
    conn = await uow.connection()
    return bool(await conn.fetch(_SCHEDULE, order_id, version, expires_at))


async def cancel_job(uow: UnitOfWork, *, order_id: uuid.UUID, version: int) -> None:
    """Mark the order's job cancelled at this version, or store a cancelled tombstone; older versions change nothing."""
    statement = insert(ExpirationJob).values(order_id=order_id, version=version, cancelled_at=func.now())
    await uow.session.execute(
        statement.on_conflict_do_update(
            index_elements=[ExpirationJob.order_id],
            set_={
                "version": statement.excluded.version,
                "cancelled_at": func.coalesce(ExpirationJob.cancelled_at, statement.excluded.cancelled_at),
            },
            where=ExpirationJob.version < statement.excluded.version,
        )
    )


async def claim_due_jobs(uow: UnitOfWork, *, limit: int) -> list[uuid.UUID]:
    """Mark up to `limit` due jobs fired and return their orders, earliest due first."""
    claimed = (await uow.session.execute(_CLAIM_DUE, {"limit": limit})).all()
    return [row.order_id for row in sorted(claimed, key=lambda row: row.expires_at)]


async def earliest_pending(uow: UnitOfWork) -> tuple[float, float] | None:
    """The earliest pending job's due time (epoch s) and how far away it is, on the database clock."""
    earliest = func.min(ExpirationJob.expires_at)
    row = (
        await uow.session.execute(
            select(
                func.extract("epoch", earliest),
                func.extract("epoch", earliest - func.clock_timestamp()),
            ).where(*_PENDING)
        )
    ).one()
    if row[0] is None:
        return None
    return float(row[0]), float(row[1])
