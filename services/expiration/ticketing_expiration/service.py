"""expiration use cases: schedule, cancel and fire order timers; plain async functions over a unit of work."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from ticketing_common.events import ExpirationComplete
from ticketing_common.uow import UnitOfWork
from ticketing_expiration import repository


@dataclass(frozen=True)
class NextDue:
    """The earliest pending job: when it is due (epoch seconds) and how far away that is on the database clock."""

    at_epoch: float
    in_seconds: float


async def schedule_expiration(
    *,
    uow: UnitOfWork,
    order_id: uuid.UUID,
    version: int,
    expires_at: datetime,
    wake: Callable[[float], None] | None = None,
) -> bool:
    """Store the job for a new order; a duplicate, or an order already cancelled (tombstone), changes nothing.

    Every replica's scheduler hears of the job by NOTIFY at commit; `wake`, this app's own scheduler, is called
    in-process once the job is committed. After commit, not now: woken before, the scheduler could look, miss the
    row and sleep on.
    """
    stored = await repository.insert_job(uow, order_id=order_id, version=version, expires_at=expires_at)
    if stored and wake is not None:
        due_epoch = expires_at.timestamp()
        uow.after_commit(lambda: wake(due_epoch))
    return stored


async def cancel_expiration(*, uow: UnitOfWork, order_id: uuid.UUID, version: int) -> None:
    """Drop an order's job so it never fires; if the create has not arrived yet, leave a tombstone that outranks it.

    This is the version rule without the wait: an older or equal version is ignored, a newer one is applied, and a
    gap (cancel before create) is applied at once as a tombstone, because a cancelled order needs no timer and so
    nothing from the create. A job that already fired stays fired (orders ignores expiry of a cancelled order).
    """
    await repository.cancel_job(uow, order_id=order_id, version=version)


async def fire_due_expirations(*, uow: UnitOfWork, limit: int) -> list[uuid.UUID]:
    """Claim up to `limit` due jobs, mark them fired and stage expiration.complete for each, in one transaction.

    Replicas claim disjoint batches; a job is marked fired in the same transaction as its event, so it is published
    exactly once whoever claims it, and a crash before commit leaves it due.
    """
    fired = await repository.claim_due_jobs(uow, limit=limit)
    for order_id in fired:
        uow.enqueue(ExpirationComplete(order_id=order_id))
    return fired


async def next_due(*, uow: UnitOfWork) -> NextDue | None:
    """The earliest pending job, measured on the database clock (the one the claim compares against)."""
    earliest = await repository.earliest_pending(uow)
    return NextDue(*earliest) if earliest is not None else None
