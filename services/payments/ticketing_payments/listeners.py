"""payments consumes order.created and order.cancelled into its version-ordered order replica."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ticketing_common.events import OrderCancelled, OrderCreated
from ticketing_common.listener import Listener, ListenerWiring
from ticketing_common.uow import UnitOfWork
from ticketing_payments import service


class OrderCreatedListener(Listener[OrderCreated]):
    """Adds the order to the replica; a duplicate changes nothing."""

    event_type = OrderCreated

    async def handle(self, event: OrderCreated, uow: UnitOfWork) -> None:
        """Record the order payments may charge."""
        order = service.ReplicaOrder(
            id=event.id,
            version=event.version,
            user_id=event.user_id,
            price=event.ticket.price,
            status=event.status.value,
            expires_at=event.expires_at,
        )
        await service.record_order_created(uow=uow, order=order)


class OrderCancelledListener(Listener[OrderCancelled]):
    """Marks the order cancelled; one that overtakes its create is retried until the create has arrived."""

    event_type = OrderCancelled

    async def handle(self, event: OrderCancelled, uow: UnitOfWork) -> None:
        """Refuse payments for the order from now on."""
        await service.record_order_cancelled(uow=uow, order_id=event.id, version=event.version)


LISTENERS: tuple[Callable[[ListenerWiring], Listener[Any]], ...] = (OrderCreatedListener, OrderCancelledListener)
