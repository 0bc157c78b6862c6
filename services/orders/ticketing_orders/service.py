"""orders use cases: plain async functions over a unit of work; no FastAPI, no SQL (that is repository.py)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

from ticketing_common.errors import BadRequest, Conflict, NotAuthorized, NotFound, ReplicaNotFound
from ticketing_common.events import (
    OrderCancelled,
    OrderCreated,
    OrderStatus,
    OrderTicket,
    TicketCreated,
    TicketRef,
    stream_for,
)
from ticketing_common.ids import find_in_replica, new_id
from ticketing_common.listener import EventOutOfOrder, durable_name, version_gate
from ticketing_common.pagination import PageCursor
from ticketing_common.uow import UnitOfWork
from ticketing_orders import repository
from ticketing_orders.repository import OrderPayment, OrderView, RefundView, TicketVersion, TicketView

__all__ = ["OrderPayment", "OrderView", "RefundView", "TicketVersion", "TicketView"]

logger = logging.getLogger("ticketing.orders")


class TicketNotFound(ReplicaNotFound):
    """The ticket is unknown to orders (503 "not yet known" while its ticket.created consumer is behind)."""

    replica_stream = stream_for(TicketCreated.subject)
    replica_durable = durable_name("orders", TicketCreated.subject)


class OrderNotFound(NotFound):
    """No order with this id."""


class NotOrderOwner(NotAuthorized):
    """The order belongs to someone else."""


class TicketReserved(BadRequest):
    """Another order already holds the ticket."""

    def __init__(self) -> None:
        super().__init__("Ticket is already reserved")


class OwnTicket(BadRequest):
    """A seller cannot buy their own ticket."""

    def __init__(self) -> None:
        super().__init__("You cannot buy your own ticket")


class TooManyOpenOrders(Conflict):
    """The user already holds MAX_OPEN_ORDERS open orders; paying for or cancelling one frees a place."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"You already hold {limit} open orders; pay for or cancel one first")


class OrderAlreadyComplete(BadRequest):
    """A paid order cannot be cancelled."""

    def __init__(self) -> None:
        super().__init__("Cannot cancel a completed order")


def _now() -> datetime:
    return datetime.now(UTC)


def _to_millis(value: datetime) -> datetime:
    # The wire carries milliseconds; storing the same instant keeps the API, the event and the row identical.
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


async def create_order(
    *,
    uow: UnitOfWork,
    user_id: uuid.UUID,
    ticket_id: uuid.UUID,
    expiration_seconds: int,
    max_open_orders: int,
    now: datetime | None = None,
) -> OrderView:
    """Reserve a ticket until now + expiration_seconds; the database's partial unique index decides races.

    Refused when the caller sold the ticket, or already holds max_open_orders open orders (counted under a lock
    on the user, so concurrent orders of one user cannot overshoot the cap).
    """
    found = await find_in_replica(ticket_id, lambda: repository.find_ticket(uow, ticket_id))
    if found is None:
        raise TicketNotFound(ticket_id)
    if found.seller_id == user_id:
        raise OwnTicket()
    if await repository.count_open_orders_locked(uow, user_id) >= max_open_orders:
        raise TooManyOpenOrders(max_open_orders)
    ticket = found.ticket
    created_at = now or _now()
    order = OrderView(
        id=new_id(),
        user_id=user_id,
        status=OrderStatus.CREATED,
        expires_at=_to_millis(created_at + timedelta(seconds=expiration_seconds)),
        version=0,
        created_at=created_at,
        ticket=ticket,
    )
    if not await repository.insert_order(uow, order):
        raise TicketReserved()
    uow.enqueue(
        OrderCreated(
            id=order.id,
            version=order.version,
            status=order.status,
            user_id=user_id,
            expires_at=order.expires_at,
            ticket=OrderTicket(id=ticket.id, price=ticket.price),
        )
    )
    return order


async def list_orders(
    *,
    uow: UnitOfWork,
    user_id: uuid.UUID,
    limit: int,
    after: PageCursor | None = None,
) -> tuple[list[OrderView], PageCursor | None]:
    """A page of the user's orders, newest first, after a keyset position; and the next page's cursor, if any."""
    rows = await repository.list_orders(uow, user_id=user_id, limit=limit + 1, after=after)
    page = rows[:limit]
    return page, PageCursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None


async def get_order(*, uow: UnitOfWork, order_id: uuid.UUID, user_id: uuid.UUID) -> OrderView:
    """The caller's order with its ticket; 404 if unknown, 401 if someone else's."""
    order = await repository.find_order(uow, order_id)
    if order is None:
        raise OrderNotFound()
    if order.user_id != user_id:
        raise NotOrderOwner()
    return order


async def _close_open_order(uow: UnitOfWork, order_id: uuid.UUID, *, user_id: uuid.UUID | None = None) -> bool:
    """Cancel the order if it is still open and publish order.cancelled; False if it was not open.

    The status condition in the UPDATE is the optimistic-concurrency check: of a cancel, an expiration
    and a payment racing for one order, Postgres lets exactly one UPDATE match, so there is only ever
    one terminal transition and one order.cancelled.
    """
    cancelled = await repository.cancel_open_order(uow, order_id, user_id=user_id)
    if cancelled is None:
        return False
    ticket_id, version = cancelled
    uow.enqueue(OrderCancelled(id=order_id, version=version, ticket=TicketRef(id=ticket_id)))
    return True


async def cancel_order(*, uow: UnitOfWork, order_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """The owner cancels: True if it was cancelled now, False if it already was; 404, 401, or 400 if complete."""
    if await _close_open_order(uow, order_id, user_id=user_id):
        return True
    current = await repository.find_owner_and_status(uow, order_id)
    if current is None:
        raise OrderNotFound()
    owner, status = current
    if owner != user_id:
        raise NotOrderOwner()
    if status == OrderStatus.COMPLETE:
        raise OrderAlreadyComplete()
    return False  # already cancelled: nothing changes and nothing is published


async def expire_order(*, uow: UnitOfWork, order_id: uuid.UUID) -> bool:
    """The reservation window ended: cancel unless complete or already cancelled. True if it was cancelled now."""
    if await _close_open_order(uow, order_id):
        return True
    if await repository.find_owner_and_status(uow, order_id) is None:
        # Orders writes the order before order.created can exist, so no expiration can rightly precede it:
        # an unknown id will never become known. Acked with a warning rather than retried into a dead letter.
        logger.warning("expiration.complete for unknown order %s ignored", order_id)
    return False


async def complete_order(*, uow: UnitOfWork, payment: OrderPayment) -> str:
    """Record a payment: complete an open order, or mark a cancelled one for refund. Returns what happened."""
    if await repository.complete_open_order(uow, payment):
        return "completed"
    # Contract rule 9: a payment that meets a cancelled order is kept, visibly, for a refund.
    if await repository.flag_cancelled_for_refund(uow, payment):
        logger.warning(
            "payment %s (stripe %s) arrived for cancelled order %s: marked for refund",
            payment.payment_id,
            payment.stripe_id,
            payment.order_id,
        )
        return "refund_pending"
    current = await repository.find_status_and_payment(uow, payment.order_id)
    if current is None:
        logger.warning("payment %s for unknown order %s ignored", payment.payment_id, payment.order_id)
        return "unknown_order"
    _, held_payment = current
    if held_payment == payment.payment_id:
        return "duplicate"
    # Payments charges at most once per order (its idempotency key is the order id); a second payment is an anomaly.
    logger.error(
        "payment %s (stripe %s) for order %s, which already holds payment %s: needs an operator",
        payment.payment_id,
        payment.stripe_id,
        payment.order_id,
        held_payment,
    )
    return "second_payment"


async def apply_ticket(*, uow: UnitOfWork, ticket: TicketVersion) -> bool:
    """Apply one ticket version to the replica in version order: True if applied, False if stale.

    The common case is one statement (insert v0, or update from v-1); only when it matches nothing does
    version_gate look at the held version to tell a stale event (ignored) from a gap (EventOutOfOrder).
    """
    if ticket.version == 0:
        applied = await repository.insert_ticket(uow, ticket)
    else:
        applied = await repository.update_ticket(uow, ticket)
    if applied:
        return True
    if version_gate(await repository.ticket_version(uow, ticket.id), ticket.version):
        # The row moved between our two statements (another replica): try again later from a clean state.
        raise EventOutOfOrder(f"ticket {ticket.id} changed while applying version {ticket.version}")
    return False
