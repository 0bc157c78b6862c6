"""expiration consumes order.created (schedule a job) and order.cancelled (drop it)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event as orm_event
from sqlalchemy.ext.asyncio import AsyncSession

from ticketing_common.events import OrderCancelled, OrderCreated
from ticketing_common.listener import Listener
from ticketing_expiration import service
from ticketing_expiration.scheduler import wake_local


class OrderCreatedListener(Listener[OrderCreated]):
    """Stores the order's job; a duplicate, or a create overtaken by its cancel, changes nothing."""

    event_type = OrderCreated

    async def handle(self, event: OrderCreated, session: AsyncSession) -> None:
        """Schedule the order's expiration and wake this app's scheduler once the job is committed."""
        stored = await service.schedule_expiration(
            session=session, order_id=event.id, version=event.version, expires_at=event.expires_at
        )
        if stored:
            due_epoch = event.expires_at.timestamp()
            sessionmaker = self.sessionmaker

            # After commit, not now: woken before the commit, the scheduler could look, miss the row and sleep on.
            def after_commit(_session: Any) -> None:
                wake_local(sessionmaker, due_epoch)

            orm_event.listen(session.sync_session, "after_commit", after_commit, once=True)


class OrderCancelledListener(Listener[OrderCancelled]):
    """Drops the order's job; a cancel that overtakes its create leaves a tombstone, so that create never fires."""

    event_type = OrderCancelled

    async def handle(self, event: OrderCancelled, session: AsyncSession) -> None:
        """Cancel the order's expiration."""
        await service.cancel_expiration(session=session, order_id=event.id, version=event.version)


LISTENERS: tuple[type[Listener[Any]], ...] = (OrderCreatedListener, OrderCancelledListener)
