"""orders use cases: plain async functions over a session, no FastAPI. Hot paths are single Core statements."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ticketing_common.db import driver_connection
from ticketing_common.errors import BadRequest, NotAuthorized, NotFound
from ticketing_common.events import OrderCancelled, OrderCreated, OrderStatus, OrderTicket, TicketRef
from ticketing_common.listener import EventOutOfOrder, version_gate
from ticketing_common.outbox import enqueue
from ticketing_common.pagination import PageCursor
from ticketing_orders.models import REFUND_PENDING, RESERVED_INDEX, Order, Ticket

if TYPE_CHECKING:
    import asyncpg

logger = logging.getLogger("ticketing.orders")

orders = cast(Table, Order.__table__)
tickets = cast(Table, Ticket.__table__)

# The listener hot paths, as plain SQL on the transaction's asyncpg connection (prepared once per connection):
# one round trip per event in the common case, none of SQLAlchemy's per-statement CPU.
_OPEN = "('created', 'awaiting:payment')"
_CANCEL_OPEN = f"""
    UPDATE orders SET status = 'cancelled', version = version + 1
    WHERE id = $1 AND status IN {_OPEN} AND ($2::uuid IS NULL OR user_id = $2::uuid)
    RETURNING ticket_id, version"""
_COMPLETE_OPEN = f"""
    UPDATE orders SET status = 'complete', version = version + 1, payment_id = $2, stripe_id = $3
    WHERE id = $1 AND status IN {_OPEN}
    RETURNING id"""
_INSERT_TICKET = """
    INSERT INTO tickets (id, title, price, version, order_id) VALUES ($1, $2, $3, 0, $4)
    ON CONFLICT (id) DO NOTHING RETURNING id"""
_UPDATE_TICKET = """
    UPDATE tickets SET title = $2, price = $3, order_id = $4, version = $5
    WHERE id = $1 AND version = $5 - 1 RETURNING id"""
_TICKET_VERSION = "SELECT version FROM tickets WHERE id = $1"
_DRIVER_KEY = "ticketing_orders.driver"


class TicketNotFound(NotFound):
    """The ticket is unknown to orders (never created, or its ticket.created has not arrived yet)."""


class OrderNotFound(NotFound):
    """No order with this id."""


class NotOrderOwner(NotAuthorized):
    """The order belongs to someone else."""


class TicketReserved(BadRequest):
    """Another order already holds the ticket."""

    def __init__(self) -> None:
        super().__init__("Ticket is already reserved")


class OrderAlreadyComplete(BadRequest):
    """A paid order cannot be cancelled."""

    def __init__(self) -> None:
        super().__init__("Cannot cancel a completed order")


@dataclass(frozen=True)
class TicketView:
    """The ticket inside an order."""

    id: uuid.UUID
    title: str
    price: Decimal
    version: int


@dataclass(frozen=True)
class RefundView:
    """A late payment waiting to be refunded."""

    status: str
    payment_id: uuid.UUID | None


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


async def _driver(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection of the session's transaction, looked up once per transaction.

    driver_connection() walks SQLAlchemy's connection machinery on every call, which was ~15% of a
    listener batch; the connection cannot change while the transaction lives, so it is remembered with it.
    """
    transaction = session.sync_session.get_transaction()
    cached = session.info.get(_DRIVER_KEY)
    if transaction is not None and cached is not None and cached[0] is transaction:
        return cast("asyncpg.Connection", cached[1])
    conn = await driver_connection(session)
    session.info[_DRIVER_KEY] = (session.sync_session.get_transaction(), conn)
    return conn


def _now() -> datetime:
    return datetime.now(UTC)


def _to_millis(value: datetime) -> datetime:
    # The wire carries milliseconds; storing the same instant keeps the API, the event and the row identical.
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


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
    tickets.c.price.label("ticket_price"),
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


async def create_order(
    *,
    session: AsyncSession,
    user_id: uuid.UUID,
    ticket_id: uuid.UUID,
    expiration_seconds: int,
    now: datetime | None = None,
) -> OrderView:
    """Reserve a ticket until now + expiration_seconds; the database's partial unique index decides races."""
    ticket = (
        await session.execute(
            select(tickets.c.id, tickets.c.title, tickets.c.price, tickets.c.version).where(tickets.c.id == ticket_id)
        )
    ).first()
    if ticket is None:
        raise TicketNotFound()
    created_at = now or _now()
    order = OrderView(
        id=uuid.uuid4(),
        user_id=user_id,
        status=OrderStatus.CREATED,
        expires_at=_to_millis(created_at + timedelta(seconds=expiration_seconds)),
        version=0,
        created_at=created_at,
        ticket=TicketView(ticket.id, ticket.title, ticket.price, ticket.version),
    )
    try:
        await session.execute(
            insert(orders).values(
                id=order.id,
                user_id=user_id,
                ticket_id=ticket_id,
                status=order.status.value,
                expires_at=order.expires_at,
                version=order.version,
                created_at=created_at,
            )
        )
    except IntegrityError as exc:
        if RESERVED_INDEX in str(exc.orig):
            raise TicketReserved() from None
        raise
    enqueue(
        session,
        OrderCreated(
            id=order.id,
            version=order.version,
            status=order.status,
            user_id=user_id,
            expires_at=order.expires_at,
            ticket=OrderTicket(id=ticket.id, price=ticket.price),
        ),
    )
    return order


async def list_orders(
    *,
    session: AsyncSession,
    user_id: uuid.UUID,
    limit: int,
    after: PageCursor | None = None,
) -> tuple[list[OrderView], PageCursor | None]:
    """A page of the user's orders, newest first, after a keyset position; and the next page's cursor, if any."""
    query = (
        select(*_ORDER_COLUMNS)
        .join(tickets, tickets.c.id == orders.c.ticket_id)
        .where(orders.c.user_id == user_id)
        .order_by(orders.c.created_at.desc(), orders.c.id.desc())
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(tuple_(orders.c.created_at, orders.c.id) < tuple_(after.created_at, after.id))
    rows = (await session.execute(query)).all()
    page = [_view(row) for row in rows[:limit]]
    return page, PageCursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None


async def get_order(*, session: AsyncSession, order_id: uuid.UUID, user_id: uuid.UUID) -> OrderView:
    """The caller's order with its ticket; 404 if unknown, 401 if someone else's."""
    row = (
        await session.execute(
            select(*_ORDER_COLUMNS).join(tickets, tickets.c.id == orders.c.ticket_id).where(orders.c.id == order_id)
        )
    ).first()
    if row is None:
        raise OrderNotFound()
    if row.user_id != user_id:
        raise NotOrderOwner()
    return _view(row)


async def _close_open_order(session: AsyncSession, order_id: uuid.UUID, *, user_id: uuid.UUID | None = None) -> bool:
    """Cancel the order if it is still open and publish order.cancelled; False if it was not open.

    The status condition in the UPDATE is the optimistic-concurrency check: of a cancel, an expiration
    and a payment racing for one order, Postgres lets exactly one UPDATE match, so there is only ever
    one terminal transition and one order.cancelled.
    """
    conn = await _driver(session)
    row = await conn.fetchrow(_CANCEL_OPEN, order_id, user_id)
    if row is None:
        return False
    enqueue(session, OrderCancelled(id=order_id, version=row["version"], ticket=TicketRef(id=row["ticket_id"])))
    return True


async def cancel_order(*, session: AsyncSession, order_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """The owner cancels: True if it was cancelled now, False if it already was; 404, 401, or 400 if complete."""
    if await _close_open_order(session, order_id, user_id=user_id):
        return True
    current = (await session.execute(select(orders.c.user_id, orders.c.status).where(orders.c.id == order_id))).first()
    if current is None:
        raise OrderNotFound()
    if current.user_id != user_id:
        raise NotOrderOwner()
    if current.status == OrderStatus.COMPLETE:
        raise OrderAlreadyComplete()
    return False  # already cancelled: nothing changes and nothing is published


async def expire_order(*, session: AsyncSession, order_id: uuid.UUID) -> bool:
    """The reservation window ended: cancel unless complete or already cancelled. True if it was cancelled now."""
    if await _close_open_order(session, order_id):
        return True
    status = (await session.execute(select(orders.c.status).where(orders.c.id == order_id))).scalar_one_or_none()
    if status is None:
        # Orders writes the order before order.created can exist, so no expiration can rightly precede it:
        # an unknown id will never become known. Acked with a warning rather than retried into a dead letter.
        logger.warning("expiration.complete for unknown order %s ignored", order_id)
    return False


async def complete_order(*, session: AsyncSession, order_id: uuid.UUID, payment_id: uuid.UUID, stripe_id: str) -> str:
    """Record a payment: complete an open order, or mark a cancelled one for refund. Returns what happened."""
    conn = await _driver(session)
    if await conn.fetchval(_COMPLETE_OPEN, order_id, payment_id, stripe_id) is not None:
        return "completed"
    # Contract rule 9: a payment that meets a cancelled order is kept, visibly, for a refund.
    flagged = (
        await session.execute(
            update(orders)
            .where(
                orders.c.id == order_id,
                orders.c.status == OrderStatus.CANCELLED.value,
                orders.c.payment_id.is_(None),
            )
            .values(refund_status=REFUND_PENDING, payment_id=payment_id, stripe_id=stripe_id)
            .returning(orders.c.id)
        )
    ).first()
    if flagged is not None:
        logger.warning(
            "payment %s (stripe %s) arrived for cancelled order %s: marked for refund",
            payment_id,
            stripe_id,
            order_id,
        )
        return "refund_pending"
    current = (
        await session.execute(select(orders.c.status, orders.c.payment_id).where(orders.c.id == order_id))
    ).first()
    if current is None:
        logger.warning("payment %s for unknown order %s ignored", payment_id, order_id)
        return "unknown_order"
    if current.payment_id == payment_id:
        return "duplicate"
    # Payments charges at most once per order (its idempotency key is the order id); a second payment is an anomaly.
    logger.error(
        "payment %s (stripe %s) for order %s, which already holds payment %s: needs an operator",
        payment_id,
        stripe_id,
        order_id,
        current.payment_id,
    )
    return "second_payment"


async def apply_ticket(
    *,
    session: AsyncSession,
    ticket_id: uuid.UUID,
    version: int,
    title: str,
    price: Decimal,
    order_id: uuid.UUID | None,
) -> bool:
    """Apply one ticket version to the replica in version order: True if applied, False if stale.

    The common case is one statement (insert v0, or update from v-1); only when it matches nothing does
    version_gate look at the held version to tell a stale event (ignored) from a gap (EventOutOfOrder).
    """
    conn = await _driver(session)
    if version == 0:
        applied = await conn.fetchval(_INSERT_TICKET, ticket_id, title, price, order_id)
    else:
        applied = await conn.fetchval(_UPDATE_TICKET, ticket_id, title, price, order_id, version)
    if applied is not None:
        return True
    held = await conn.fetchval(_TICKET_VERSION, ticket_id)
    if version_gate(held, version):
        # The row moved between our two statements (another replica): try again later from a clean state.
        raise EventOutOfOrder(f"ticket {ticket_id} changed while applying version {version}")
    return False
