"""expiration consumes order.created (schedule a job) and order.cancelled (drop it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ticketing_common.events import OrderCancelled, OrderCreated
from ticketing_common.listener import Listener, ListenerWiring
from ticketing_common.uow import UnitOfWork
from ticketing_expiration import service


class OrderCreatedListener(Listener[OrderCreated]):
    """Stores the order's job; a duplicate, or a create overtaken by its cancel, changes nothing."""

    event_type = OrderCreated

    def __init__(self, wiring: ListenerWiring, *, wake: Callable[[float], None] | None = None) -> None:
        super().__init__(wiring)
        self.wake = wake

    async def handle(self, event: OrderCreated, uow: UnitOfWork) -> None:
        """Schedule the order's expiration and wake this app's scheduler once the job is committed."""
        await service.schedule_expiration(
            uow=uow, order_id=event.id, version=event.version, expires_at=event.expires_at, wake=self.wake
        )


class OrderCancelledListener(Listener[OrderCancelled]):
    """Drops the order's job; a cancel that overtakes its create leaves a tombstone, so that create never fires."""

    event_type = OrderCancelled

    async def handle(self, event: OrderCancelled, uow: UnitOfWork) -> None:
        """Cancel the order's expiration."""
        await service.cancel_expiration(uow=uow, order_id=event.id, version=event.version)


def listeners(wake: Callable[[float], None]) -> tuple[Callable[[ListenerWiring], Listener[Any]], ...]:
    """The service's listeners, the order.created one wired to wake this app's scheduler."""

    def order_created(wiring: ListenerWiring) -> Listener[Any]:
        return OrderCreatedListener(wiring, wake=wake)

    return (order_created, OrderCancelledListener)
