"""orders queries: every statement the service runs, and nothing else.

The listener hot paths (cancel, complete, the ticket replica) are raw asyncpg on the transaction's own connection:
one round trip per event in the common case and none of SQLAlchemy's per-statement CPU (bench/: listener). The rest
is SQLAlchemy Core in the same transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from ticketing_common.events import OrderStatus
from ticketing_common.pagination import PageCursor
from ticketing_common.uow import UnitOfWork
from ticketing_orders.models import OPEN_STATUSES, REFUND_PENDING, RESERVED_INDEX, Order, Ticket, sql_list

orders = cast(Table, Order.__table__)
tickets = cast(Table, Ticket.__table__)


@dataclass(frozen=True)
class TicketView:
    """The ticket inside an order."""

    id: uuid.UUID
    title: str
    price: Decimal
    version: int


@dataclass(frozen=True)
class ReplicaTicket:
    """A ticket as orders' replica holds it, with its seller when known."""

    ticket: TicketView
    seller_id: uuid.UUID | None


@dataclass(frozen=True)
class RefundView:
    """A late payment waiting to be refunded."""

    status: str
    payment_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class TicketVersion:
    """One version of a ticket, as ticket.created or ticket.updated gives it to the replica."""

    id: uuid.UUID
    version: int
    title: str
    price: Decimal
    order_id: uuid.UUID | None
    seller_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class OrderPayment:
    """A payment for an order, as payment.created announces it."""

    order_id: uuid.UUID
    payment_id: uuid.UUID
    stripe_id: str


@dataclass(frozen=True)
class OrderView:
    """An order with its ticket, as the API shows it."""

    id: uuid.UUID
    user_id: uuid.UUID
    status: OrderStatus
    expires_at: datetime
    version: int
    created_at: datetime
    ticket: TicketView
    refund: RefundView | None = None


# Built from the typed statuses, never written beside them.
_OPEN = f"({sql_list(OPEN_STATUSES)})"
_CANCEL_OPEN = f"""
    UPDATE orders SET status = '{OrderStatus.CANCELLED.value}', version = version + 1
    WHERE id = $1 AND status IN {_OPEN} AND ($2::uuid IS NULL OR user_id = $2::uuid)
    RETURNING ticket_id, version"""
_COMPLETE_OPEN = f"""
    UPDATE orders SET status = '{OrderStatus.COMPLETE.value}', version = version + 1, payment_id = $2, stripe_id = $3
    WHERE id = $1 AND status IN {_OPEN}
    RETURNING id"""
_INSERT_TICKET = """
    INSERT INTO tickets (id, title, price, version, order_id, user_id) VALUES ($1, $2, $3, 0, $4, $5)
    ON CONFLICT (id) DO NOTHING RETURNING id"""
_UPDATE_TICKET = """
    UPDATE tickets SET title = $2, price = $3, order_id = $4, version = $5, user_id = $6
    WHERE id = $1 AND version = $5 - 1 RETURNING id"""
# The user's open orders, counted under a lock on the user, so two concurrent orders cannot both pass the cap.
_LOCK_USER = "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))"
_OPEN_ORDERS = f"SELECT count(*) FROM orders WHERE user_id = $1 AND status IN {_OPEN}"
_TICKET_VERSION = "SELECT version FROM tickets WHERE id = $1"

_ORDER_COLUMNS = (
    orders.c.id,
    orders.c.user_id,
    orders.c.status,
    orders.c.expires_at,
    orders.c.version,
    orders.c.created_at,
    orders.c.refund_status,
    orders.c.payment_id,
    tickets.c.id.label("ticket_id"),
    tickets.c.title.label("ticket_title"),
    orders.c.price.label("ticket_price"),
    tickets.c.version.label("ticket_version"),
)


def _view(row: Any) -> OrderView:
    refund = RefundView(row.refund_status, row.payment_id) if row.refund_status else None
    return OrderView(
        id=row.id,
        user_id=row.user_id,
        status=OrderStatus(row.status),
        expires_at=row.expires_at,
        version=row.version,
        created_at=row.created_at,
        ticket=TicketView(row.ticket_id, row.ticket_title, row.ticket_price, row.ticket_version),
        refund=refund,
    )


async def find_ticket(uow: UnitOfWork, ticket_id: uuid.UUID) -> ReplicaTicket | None:
    """The replica's ticket and its seller, or None if orders has not heard of it."""
    row = (
        await uow.session.execute(
            select(tickets.c.id, tickets.c.title, tickets.c.price, tickets.c.version, tickets.c.user_id).where(
                tickets.c.id == ticket_id
            )
        )
    ).first()
    if row is None:
        return None
    return ReplicaTicket(TicketView(row.id, row.title, row.price, row.version), row.user_id)


async def count_open_orders_locked(uow: UnitOfWork, user_id: uuid.UUID) -> int:
    """The user's open orders, after taking the user's lock until the transaction ends."""
    conn = await uow.connection()
    await conn.execute(_LOCK_USER, str(user_id))
    count: int = await conn.fetchval(_OPEN_ORDERS, user_id)
    return count


async def insert_order(uow: UnitOfWork, order: OrderView) -> bool:
    """Insert a new order; False if another order already reserves its ticket (the partial unique index decides)."""
    try:
        await uow.session.execute(
            insert(orders).values(
                id=order.id,
                user_id=order.user_id,
                ticket_id=order.ticket.id,
                status=order.status.value,
                price=order.ticket.price,
                expires_at=order.expires_at,
                version=order.version,
                created_at=order.created_at,
            )
        )
    except IntegrityError as exc:
        if RESERVED_INDEX in str(exc.orig):
            return False
        raise
    return True


async def list_orders(uow: UnitOfWork, *, user_id: uuid.UUID, limit: int, after: PageCursor | None) -> list[OrderView]:
    """Up to `limit` of the user's orders with their tickets, newest first, after a keyset position."""
    query = (
        select(*_ORDER_COLUMNS)
        .join(tickets, tickets.c.id == orders.c.ticket_id)
        .where(orders.c.user_id == user_id)
        .order_by(orders.c.created_at.desc(), orders.c.id.desc())
        .limit(limit)
    )
    if after is not None:
        query = query.where(tuple_(orders.c.created_at, orders.c.id) < tuple_(after.created_at, after.id))
    return [_view(row) for row in (await uow.session.execute(query)).all()]


async def find_order(uow: UnitOfWork, order_id: uuid.UUID) -> OrderView | None:
    """One order with its ticket, or None."""
    row = (
        await uow.session.execute(
            select(*_ORDER_COLUMNS).join(tickets, tickets.c.id == orders.c.ticket_id).where(orders.c.id == order_id)
        )
    ).first()
    return _view(row) if row is not None else None


async def cancel_open_order(
    uow: UnitOfWork, order_id: uuid.UUID, *, user_id: uuid.UUID | None = None
) -> tuple[uuid.UUID, int] | None:
    """Cancel the order if it is open (and the user's, when given): its ticket id and new version, else None."""
    conn = await uow.connection()
    row = await conn.fetchrow(_CANCEL_OPEN, order_id, user_id)
    return (row["ticket_id"], row["version"]) if row is not None else None


async def complete_open_order(uow: UnitOfWork, payment: OrderPayment) -> bool:
    """Complete the order with its payment if it is open; False otherwise."""
    conn = await uow.connection()
    return await conn.fetchval(_COMPLETE_OPEN, payment.order_id, payment.payment_id, payment.stripe_id) is not None


async def flag_cancelled_for_refund(uow: UnitOfWork, payment: OrderPayment) -> bool:
    """Record a payment on a cancelled order that has none, marked for refund; False if no such order."""
    flagged = (
        await uow.session.execute(
            update(orders)
            .where(
                orders.c.id == payment.order_id,
                orders.c.status == OrderStatus.CANCELLED.value,
                orders.c.payment_id.is_(None),
            )
            .values(refund_status=REFUND_PENDING, payment_id=payment.payment_id, stripe_id=payment.stripe_id)
            .returning(orders.c.id)
        )
    ).first()
    return flagged is not None


async def find_owner_and_status(uow: UnitOfWork, order_id: uuid.UUID) -> tuple[uuid.UUID, OrderStatus] | None:
    """The order's user and status, or None."""
    row = (await uow.session.execute(select(orders.c.user_id, orders.c.status).where(orders.c.id == order_id))).first()
    return (row.user_id, OrderStatus(row.status)) if row is not None else None


async def find_status_and_payment(uow: UnitOfWork, order_id: uuid.UUID) -> tuple[OrderStatus, uuid.UUID | None] | None:
    """The order's status and recorded payment, or None."""
    row = (
        await uow.session.execute(select(orders.c.status, orders.c.payment_id).where(orders.c.id == order_id))
    ).first()
    return (OrderStatus(row.status), row.payment_id) if row is not None else None


async def insert_ticket(uow: UnitOfWork, ticket: TicketVersion) -> bool:
    """Add version 0 of a ticket to the replica; False if the replica already holds the ticket."""
    conn = await uow.connection()
    return (
        await conn.fetchval(_INSERT_TICKET, ticket.id, ticket.title, ticket.price, ticket.order_id, ticket.seller_id)
        is not None
    )


async def update_ticket(uow: UnitOfWork, ticket: TicketVersion) -> bool:
    """Move the replica's ticket to `ticket.version` if it holds the version before; False otherwise."""
    conn = await uow.connection()
    row_id = await conn.fetchval(
        _UPDATE_TICKET, ticket.id, ticket.title, ticket.price, ticket.order_id, ticket.version, ticket.seller_id
    )
    return row_id is not None


async def ticket_version(uow: UnitOfWork, ticket_id: uuid.UUID) -> int | None:
    """The replica's version of a ticket, or None if it holds none."""
    conn = await uow.connection()
    version: int | None = await conn.fetchval(_TICKET_VERSION, ticket_id)
    return version
