"""tickets use cases: plain async functions over a session or connection, no FastAPI."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
from sqlalchemy import Row, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ticketing_common.errors import BadRequest, Conflict, NotAuthorized, NotFound
from ticketing_common.events import TicketCreated, TicketUpdated
from ticketing_common.listener import EventOutOfOrder, version_gate
from ticketing_common.outbox import enqueue, event_args, with_event
from ticketing_common.pagination import PageCursor
from ticketing_tickets.models import order_versions, tickets

logger = logging.getLogger("ticketing.tickets")

# What a ticket looks like to clients and events, in one column list so each statement reads it in one go.
_COLUMNS = (tickets.c.id, tickets.c.title, tickets.c.price, tickets.c.user_id, tickets.c.version, tickets.c.order_id)


class TicketNotFound(NotFound):
    """No ticket has this id."""


class NotTicketOwner(NotAuthorized):
    """The caller is not the ticket's seller."""


class TicketReserved(BadRequest):
    """A reserved ticket cannot be edited."""

    def __init__(self) -> None:
        super().__init__("Cannot edit a reserved ticket")


class TicketChanged(Conflict):
    """The ticket changed while the edit was being decided; retrying may succeed."""


@dataclass(frozen=True, slots=True)
class TicketState:
    """A ticket's public fields."""

    id: uuid.UUID
    title: str
    price: Decimal
    user_id: uuid.UUID
    version: int
    order_id: uuid.UUID | None

    @classmethod
    def from_row(cls, row: Row[Any]) -> TicketState:
        """From a row selected with the ticket's public columns."""
        return cls(row.id, row.title, row.price, row.user_id, row.version, row.order_id)


def _ticket_updated(ticket: TicketState) -> TicketUpdated:
    return TicketUpdated(
        id=ticket.id,
        version=ticket.version,
        title=ticket.title,
        price=ticket.price,
        user_id=ticket.user_id,
        order_id=ticket.order_id,
    )


# The two hottest paths, as plain SQL on asyncpg: SQLAlchemy's session and statement machinery cost several times
# the database work here (see bench/). The create is one statement with its event, so it needs no transaction.
_CREATE_TICKET = with_event(
    "INSERT INTO tickets (id, title, price, user_id, version) VALUES ($1, $2, $3, $4, 0) RETURNING id", 4
)
_SELECT_TICKET = "SELECT id, title, price, user_id, version, order_id FROM tickets WHERE id = $1"


async def create_ticket(*, conn: asyncpg.Connection, user_id: uuid.UUID, title: str, price: Decimal) -> TicketState:
    """List a ticket for sale at version 0 and write ticket.created, atomically in one statement."""
    ticket = TicketState(id=uuid.uuid4(), title=title, price=price, user_id=user_id, version=0, order_id=None)
    event = TicketCreated(id=ticket.id, version=0, title=title, price=price, user_id=user_id)
    await conn.execute(_CREATE_TICKET, ticket.id, title, price, user_id, *event_args(event))
    return ticket


async def get_ticket(*, conn: asyncpg.Connection, ticket_id: uuid.UUID) -> TicketState:
    """One ticket, or TicketNotFound."""
    row = await conn.fetchrow(_SELECT_TICKET, ticket_id)
    if row is None:
        raise TicketNotFound()
    return TicketState(row["id"], row["title"], row["price"], row["user_id"], row["version"], row["order_id"])


async def list_unreserved_tickets(
    *, db: AsyncSession | AsyncConnection, limit: int, after: PageCursor | None = None
) -> tuple[list[TicketState], PageCursor | None]:
    """A page of unreserved tickets, newest first, and the cursor of the next page (None on the last)."""
    query = select(*_COLUMNS, tickets.c.created_at).where(tickets.c.order_id.is_(None))
    if after is not None:
        # Keyset paging: stable under inserts and as cheap for page 1000 as for page 1.
        query = query.where(tuple_(tickets.c.created_at, tickets.c.id) < tuple_(after.created_at, after.id))
    query = query.order_by(tickets.c.created_at.desc(), tickets.c.id.desc()).limit(limit + 1)
    rows = (await db.execute(query)).all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = PageCursor(rows[-1].created_at, rows[-1].id)
    return [TicketState.from_row(row) for row in rows], next_cursor


async def update_ticket(
    *, session: AsyncSession, ticket_id: uuid.UUID, user_id: uuid.UUID, title: str, price: Decimal
) -> TicketState:
    """Change a ticket's title and price, bump its version and stage ticket.updated.

    One conditional UPDATE decides: it only matches the owner's unreserved ticket, and Postgres re-checks
    that condition after waiting for any concurrent writer's row lock. So concurrent edits (and an order
    reserving the ticket meanwhile) serialize: each edit that succeeds gets its own version, none is lost,
    and an edit never lands on a ticket that got reserved while it waited.
    """
    row = (
        await session.execute(
            update(tickets)
            .where(tickets.c.id == ticket_id, tickets.c.user_id == user_id, tickets.c.order_id.is_(None))
            .values(title=title, price=price, version=tickets.c.version + 1)
            .returning(*_COLUMNS)
        )
    ).first()
    if row is None:
        raise await _why_not_editable(session, ticket_id, user_id)
    ticket = TicketState.from_row(row)
    enqueue(session, _ticket_updated(ticket))
    return ticket


async def _why_not_editable(session: AsyncSession, ticket_id: uuid.UUID, user_id: uuid.UUID) -> Exception:
    # Only reached on the unhappy path, so the happy path stays one statement.
    row = (
        await session.execute(select(tickets.c.user_id, tickets.c.order_id).where(tickets.c.id == ticket_id))
    ).first()
    if row is None:
        return TicketNotFound()
    if row.user_id != user_id:
        return NotTicketOwner()
    if row.order_id is not None:
        return TicketReserved()
    # It was reserved when the UPDATE looked and released since: the caller may simply retry.
    return TicketChanged()


async def _lock_ticket(session: AsyncSession, ticket_id: uuid.UUID) -> TicketState | None:
    # Every order event for a ticket takes this lock first, so they apply one at a time per ticket.
    row = (await session.execute(select(*_COLUMNS).where(tickets.c.id == ticket_id).with_for_update())).first()
    return TicketState.from_row(row) if row is not None else None


async def _held_order_version(session: AsyncSession, order_id: uuid.UUID) -> int | None:
    return (
        await session.execute(
            select(order_versions.c.version).where(order_versions.c.order_id == order_id).with_for_update()
        )
    ).scalar_one_or_none()


def cancellation_applies(held: int | None, incoming: int) -> bool:
    """The version rule for order.cancelled: True to apply, False to ignore, EventOutOfOrder to wait.

    A cancellation waits for its order.created (nothing held). Once created is held, any later version
    applies: cancelling is final for an order, and the versions in between (payment progress) are never
    published to tickets, so waiting for them would leave the ticket reserved by a cancelled order forever.
    """
    if held is None:
        raise EventOutOfOrder(f"order.cancelled version {incoming} arrived before order.created")
    return version_gate(held, min(incoming, held + 1))


async def reserve_ticket(
    *, session: AsyncSession, order_id: uuid.UUID, order_version: int, ticket_id: uuid.UUID, expires_at: datetime
) -> None:
    """Apply order.created: record the live order and settle who reserves its ticket."""
    ticket = await _lock_ticket(session, ticket_id)
    if not version_gate(await _held_order_version(session, order_id), order_version):
        return
    await session.execute(
        insert(order_versions).values(
            order_id=order_id, ticket_id=ticket_id, version=order_version, expires_at=expires_at, cancelled=False
        )
    )
    if ticket is None:
        # Orders only learns tickets from our own ticket.created, so this is a data problem, not a race.
        logger.warning("order %s reserves ticket %s, which tickets does not have; ignored", order_id, ticket_id)
        return
    await _settle_reservation(session, ticket)


async def release_ticket(
    *, session: AsyncSession, order_id: uuid.UUID, order_version: int, ticket_id: uuid.UUID
) -> None:
    """Apply order.cancelled: mark the order cancelled and settle who reserves its ticket."""
    ticket = await _lock_ticket(session, ticket_id)
    if not cancellation_applies(await _held_order_version(session, order_id), order_version):
        return
    await session.execute(
        update(order_versions)
        .where(order_versions.c.order_id == order_id)
        .values(version=order_version, cancelled=True)
    )
    if ticket is not None:
        await _settle_reservation(session, ticket)


async def _settle_reservation(session: AsyncSession, ticket: TicketState) -> None:
    """Point the ticket at its live order (or none); on a change bump the version and stage ticket.updated.

    Orders lets at most one order hold a ticket at a time, so once every event has arrived at most one
    recorded order is live. Before that, an order.created can arrive while an older order's cancellation
    is still on its way: then the newest (latest expiresAt) live order is shown, which is the one that
    will remain. The result depends only on which events were applied, never on their arrival order.
    """
    live = (
        (
            await session.execute(
                select(order_versions.c.order_id)
                .where(order_versions.c.ticket_id == ticket.id, order_versions.c.cancelled.is_(False))
                .order_by(order_versions.c.expires_at.desc(), order_versions.c.order_id.desc())
                .limit(2)
            )
        )
        .scalars()
        .all()
    )
    if len(live) > 1:
        logger.warning(
            "ticket %s has several live orders (%s); showing the newest until the others' cancellations arrive",
            ticket.id,
            ", ".join(str(o) for o in live),
        )
    holder = live[0] if live else None
    if holder == ticket.order_id:
        return
    row = (
        await session.execute(
            update(tickets)
            .where(tickets.c.id == ticket.id)
            .values(order_id=holder, version=tickets.c.version + 1)
            .returning(*_COLUMNS)
        )
    ).one()
    enqueue(session, _ticket_updated(TicketState.from_row(row)))
