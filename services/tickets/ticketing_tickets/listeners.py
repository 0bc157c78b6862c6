"""tickets consumes order events: an order reserves its ticket, and a cancelled order releases it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ticketing_common.events import OrderCancelled, OrderCreated
from ticketing_common.listener import Listener, ListenerWiring
from ticketing_common.uow import UnitOfWork
from ticketing_tickets import service


class OrderCreatedListener(Listener[OrderCreated]):
    """order.created: the order reserves its ticket."""

    event_type = OrderCreated

    async def handle(self, event: OrderCreated, uow: UnitOfWork) -> None:
        """Reserve the ticket for the order (version 0 of the order applies once)."""
        await service.reserve_ticket(
            uow=uow,
            order_id=event.id,
            order_version=event.version,
            ticket_id=event.ticket.id,
            expires_at=event.expires_at,
            price=event.ticket.price,
        )


class OrderCancelledListener(Listener[OrderCancelled]):
    """order.cancelled: the order lets its ticket go."""

    event_type = OrderCancelled

    async def handle(self, event: OrderCancelled, uow: UnitOfWork) -> None:
        """Release the ticket if this order holds it; waits for the order's order.created first."""
        await service.release_ticket(uow=uow, order_id=event.id, order_version=event.version, ticket_id=event.ticket.id)


LISTENERS: tuple[Callable[[ListenerWiring], Listener[Any]], ...] = (OrderCreatedListener, OrderCancelledListener)
