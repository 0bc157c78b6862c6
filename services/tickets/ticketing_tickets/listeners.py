"""tickets consumes order events: an order reserves its ticket, and a cancelled order releases it."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ticketing_common.events import OrderCancelled, OrderCreated
from ticketing_common.listener import Listener
from ticketing_tickets import service


class OrderCreatedListener(Listener[OrderCreated]):
    """order.created: the order reserves its ticket."""

    event_type = OrderCreated

    async def handle(self, event: OrderCreated, session: AsyncSession) -> None:
        """Reserve the ticket for the order (version 0 of the order applies once)."""
        await service.reserve_ticket(
            session=session,
            order_id=event.id,
            order_version=event.version,
            ticket_id=event.ticket.id,
            expires_at=event.expires_at,
        )


class OrderCancelledListener(Listener[OrderCancelled]):
    """order.cancelled: the order lets its ticket go."""

    event_type = OrderCancelled

    async def handle(self, event: OrderCancelled, session: AsyncSession) -> None:
        """Release the ticket if this order holds it; waits for the order's order.created first."""
        await service.release_ticket(
            session=session, order_id=event.id, order_version=event.version, ticket_id=event.ticket.id
        )


LISTENERS: tuple[type[Listener[Any]], ...] = (OrderCreatedListener, OrderCancelledListener)
