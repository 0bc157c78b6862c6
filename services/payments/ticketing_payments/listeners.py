"""payments consumes order.created and order.cancelled into its version-ordered order replica."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ticketing_common.events import OrderCancelled, OrderCreated
from ticketing_common.listener import Listener
from ticketing_payments import service


class OrderCreatedListener(Listener[OrderCreated]):
    """Adds the order to the replica; a duplicate changes nothing."""

    event_type = OrderCreated

    async def handle(self, event: OrderCreated, session: AsyncSession) -> None:
        """Record the order payments may charge."""
        await service.record_order_created(
            session=session,
            order_id=event.id,
            version=event.version,
            user_id=event.user_id,
            price=event.ticket.price,
            status=event.status.value,
            expires_at=event.expires_at,
        )


class OrderCancelledListener(Listener[OrderCancelled]):
    """Marks the order cancelled; one that overtakes its create is retried until the create has arrived."""

    event_type = OrderCancelled

    async def handle(self, event: OrderCancelled, session: AsyncSession) -> None:
        """Refuse payments for the order from now on."""
        await service.record_order_cancelled(session=session, order_id=event.id, version=event.version)


LISTENERS: tuple[type[Listener[Any]], ...] = (OrderCreatedListener, OrderCancelledListener)
