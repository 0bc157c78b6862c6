"""orders listeners: the tickets replica in version order, expirations, and payments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ticketing_common.events import ExpirationComplete, PaymentCreated, TicketCreated, TicketUpdated
from ticketing_common.listener import Listener, ListenerWiring
from ticketing_common.uow import UnitOfWork
from ticketing_orders import service


def _ticket_version(event: TicketCreated | TicketUpdated) -> service.TicketVersion:
    """The version an event carries; a new ticket is not reserved."""
    return service.TicketVersion(
        id=event.id,
        version=event.version,
        title=event.title,
        price=event.price,
        order_id=event.order_id if isinstance(event, TicketUpdated) else None,
        seller_id=event.user_id,
    )


class TicketCreatedListener(Listener[TicketCreated]):
    """ticket.created: add version 0 of a ticket to the replica."""

    event_type = TicketCreated

    async def handle(self, event: TicketCreated, uow: UnitOfWork) -> None:
        """Insert the ticket unless a version is already held."""
        await service.apply_ticket(uow=uow, ticket=_ticket_version(event))


class TicketUpdatedListener(Listener[TicketUpdated]):
    """ticket.updated: apply version v once v-1 is held; older ones are ignored, gaps wait."""

    event_type = TicketUpdated

    async def handle(self, event: TicketUpdated, uow: UnitOfWork) -> None:
        """Apply the new title, price and reservation if it is the next version."""
        await service.apply_ticket(uow=uow, ticket=_ticket_version(event))


class ExpirationCompleteListener(Listener[ExpirationComplete]):
    """expiration.complete: cancel the order unless it is complete, and publish order.cancelled."""

    event_type = ExpirationComplete

    async def handle(self, event: ExpirationComplete, uow: UnitOfWork) -> None:
        """Cancel the expired order if it is still open."""
        await service.expire_order(uow=uow, order_id=event.order_id)


class PaymentCreatedListener(Listener[PaymentCreated]):
    """payment.created: complete the order, or mark a cancelled one for refund."""

    event_type = PaymentCreated

    async def handle(self, event: PaymentCreated, uow: UnitOfWork) -> None:
        """Record the payment against its order."""
        payment = service.OrderPayment(order_id=event.order_id, payment_id=event.id, stripe_id=event.stripe_id)
        await service.complete_order(uow=uow, payment=payment)


LISTENERS: tuple[Callable[[ListenerWiring], Listener[Any]], ...] = (
    TicketCreatedListener,
    TicketUpdatedListener,
    ExpirationCompleteListener,
    PaymentCreatedListener,
)
