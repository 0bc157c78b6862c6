"""auth queries: every statement the service runs, and nothing else."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from ticketing_auth.models import User
from ticketing_common.uow import UnitOfWork


async def add_user(uow: UnitOfWork, *, email: str, password_hash: str) -> User | None:
    """Insert a user; None if the email is taken (the unique index decides, so a race cannot slip through)."""
    statement = (
        insert(User)
        .values(id=uuid.uuid4(), email=email, password_hash=password_hash)
        .on_conflict_do_nothing(index_elements=[User.email])
        .returning(User)
    )
    user: User | None = (await uow.session.scalars(statement)).one_or_none()
    return user


async def find_user_by_email(uow: UnitOfWork, email: str) -> User | None:
    """The user with this (normalised) email, if any."""
    user: User | None = (await uow.session.execute(select(User).where(User.email == email))).scalar_one_or_none()
    return user


# One statement per failure, outside the request's transaction (the failed request rolls back, its count must not):
# a new or expired window starts at 1, a live one counts up. Expired rows go a hundred at a time, so the table
# holds only live windows without a job of its own.
_RECORD_FAILURE = """
    WITH pruned AS (
        DELETE FROM signin_failures WHERE key IN (
            SELECT key FROM signin_failures WHERE window_start <= $2::timestamptz - $3 * interval '1 second' LIMIT 100
        ) AND key <> ALL($1::text[])
    )
    INSERT INTO signin_failures AS f (key, window_start, failures)
    SELECT unnest($1::text[]), $2::timestamptz, 1
    ON CONFLICT (key) DO UPDATE SET
        failures = CASE WHEN f.window_start <= $2::timestamptz - $3 * interval '1 second' THEN 1 ELSE f.failures + 1 END,
        window_start = CASE WHEN f.window_start <= $2::timestamptz - $3 * interval '1 second'
                            THEN $2::timestamptz ELSE f.window_start END"""
_FAILURES = "SELECT key, window_start, failures FROM signin_failures WHERE key = ANY($1::text[])"


async def signin_failures(uow: UnitOfWork, keys: list[str]) -> dict[str, tuple[datetime, int]]:
    """The counted failures of each key that has any: its window's start and its count."""
    async with uow.autocommit() as conn:
        rows = await conn.fetch(_FAILURES, keys)
    return {row["key"]: (row["window_start"], row["failures"]) for row in rows}


async def record_signin_failure(uow: UnitOfWork, keys: list[str], *, now: datetime, window_seconds: int) -> None:
    """Count one failed sign-in against every key, committed at once whatever the request does next."""
    async with uow.autocommit() as conn:
        await conn.execute(_RECORD_FAILURE, keys, now, window_seconds)


async def clear_signin_failures(uow: UnitOfWork, key: str) -> None:
    """Forget a key's failures (an account after its owner signed in)."""
    async with uow.autocommit() as conn:
        await conn.execute("DELETE FROM signin_failures WHERE key = $1", key)
