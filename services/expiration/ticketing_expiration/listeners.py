"""expiration consumes order.created (schedule a job) and order.cancelled (drop it)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event as orm_event
from sqlalchemy.ext.asyncio import AsyncSession

from ticketing_common.events import OrderCancelled, OrderCreated
from ticketing_common.listener import Listener
from ticketing_expiration import service
from ticketing_expiration.scheduler import wake_local

_WAKE_KEY = "expiration_wake_epoch"


class OrderCreatedListener(Listener[OrderCreated]):
    """Stores the order's job; a duplicate, or a create overtaken by its cancel, changes nothing."""

    event_type = OrderCreated

    async def handle(self, event: OrderCreated, session: AsyncSession) -> None:
        """Schedule the order's expiration and wake this app's scheduler once the job is committed."""
        stored = await service.schedule_expiration(
            session=session, order_id=event.id, version=event.version, expires_at=event.expires_at
        )
        if stored:
            _wake_after_commit(session, self.sessionmaker, event.expires_at.timestamp())


def _wake_after_commit(session: AsyncSession, sessionmaker: Any, due_epoch: float) -> None:
    """Wake this app's scheduler once the transaction commits, for the soonest job it stored.

    After commit, not now: woken before the commit, the scheduler could look, miss the row and sleep on. A batch of
    events shares one transaction, so one hook per transaction carries the earliest due time of the batch.
    """
    soonest = session.info.get(_WAKE_KEY)
    session.info[_WAKE_KEY] = due_epoch if soonest is None else min(soonest, due_epoch)
    if soonest is not None:
        return

    def after_commit(sync_session: Any) -> None:
        wake_local(sessionmaker, sync_session.info.pop(_WAKE_KEY))

    orm_event.listen(session.sync_session, "after_commit", after_commit, once=True)


class OrderCancelledListener(Listener[OrderCancelled]):
    """Drops the order's job; a cancel that overtakes its create leaves a tombstone, so that create never fires."""

    event_type = OrderCancelled

    async def handle(self, event: OrderCancelled, session: AsyncSession) -> None:
        """Cancel the order's expiration."""
        await service.cancel_expiration(session=session, order_id=event.id, version=event.version)


LISTENERS: tuple[type[Listener[Any]], ...] = (OrderCreatedListener, OrderCancelledListener)
