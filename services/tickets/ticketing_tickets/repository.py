"""tickets queries: every statement the service runs, and nothing else.

The public create and reads are raw asyncpg on the pool (autocommit): SQLAlchemy's session and statement machinery
cost several times the database work on them (bench/: write and read). The rest runs in the unit of work's
transaction as SQLAlchemy Core.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, insert, select, update

from ticketing_common.events import TicketCreated
from ticketing_common.outbox import event_args, with_event
from ticketing_common.pagination import PageCursor
from ticketing_common.uow import UnitOfWork
from ticketing_tickets.models import order_versions, tickets


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

    @classmethod
    def from_record(cls, record: Any) -> TicketState:
        """From an asyncpg record with the ticket's public columns."""
        return cls(
            record["id"], record["title"], record["price"], record["user_id"], record["version"], record["order_id"]
        )


# What a ticket looks like to clients and events, in one column list so each statement reads it in one go.
_COLUMNS = (tickets.c.id, tickets.c.title, tickets.c.price, tickets.c.user_id, tickets.c.version, tickets.c.order_id)
_PUBLIC = "id, title, price, user_id, version, order_id"

# One statement with its event, so it needs no transaction: one round trip instead of four.
_CREATE_TICKET = with_event(
    "INSERT INTO tickets (id, title, price, user_id, version) VALUES ($1, $2, $3, $4, 0) RETURNING id", 4
)
_SELECT_TICKET = f"SELECT {_PUBLIC} FROM tickets WHERE id = $1"
# Keyset paging on the partial index of unreserved tickets: stable under inserts, as cheap for page 1000 as for
# page 1. Two statements rather than one with `$1 IS NULL OR ...`, so each keeps a plan that uses the index.
_FIRST_PAGE = f"""
    SELECT {_PUBLIC}, created_at FROM tickets WHERE order_id IS NULL
    ORDER BY created_at DESC, id DESC LIMIT $1"""
_NEXT_PAGE = f"""
    SELECT {_PUBLIC}, created_at FROM tickets WHERE order_id IS NULL AND (created_at, id) < ($2, $3)
    ORDER BY created_at DESC, id DESC LIMIT $1"""


async def insert_ticket(uow: UnitOfWork, ticket: TicketState, event: TicketCreated) -> None:
    """Insert a version-0 ticket and its ticket.created outbox row, atomically in one statement."""
    async with uow.autocommit() as conn:
        await conn.execute(_CREATE_TICKET, ticket.id, ticket.title, ticket.price, ticket.user_id, *event_args(event))


async def find_ticket(uow: UnitOfWork, ticket_id: uuid.UUID) -> TicketState | None:
    """One ticket, or None."""
    async with uow.autocommit() as conn:
        row = await conn.fetchrow(_SELECT_TICKET, ticket_id)
    return TicketState.from_record(row) if row is not None else None


async def list_unreserved(
    uow: UnitOfWork, *, limit: int, after: PageCursor | None
) -> list[tuple[TicketState, datetime]]:
    """Up to `limit` unreserved tickets after a keyset position, newest first, each with its created_at."""
    async with uow.autocommit() as conn:
        if after is None:
            rows = await conn.fetch(_FIRST_PAGE, limit)
        else:
            rows = await conn.fetch(_NEXT_PAGE, limit, after.created_at, after.id)
    return [(TicketState.from_record(row), row["created_at"]) for row in rows]


async def update_unreserved_ticket(
    uow: UnitOfWork, *, ticket_id: uuid.UUID, user_id: uuid.UUID, title: str, price: Decimal
) -> TicketState | None:
    """Edit the owner's unreserved ticket and bump its version; None if no such ticket matched.

    Postgres re-checks the WHERE after waiting for a concurrent writer's row lock, so concurrent edits serialize.
    """
    row = (
        await uow.session.execute(
            update(tickets)
            .where(tickets.c.id == ticket_id, tickets.c.user_id == user_id, tickets.c.order_id.is_(None))
            .values(title=title, price=price, version=tickets.c.version + 1)
            .returning(*_COLUMNS)
        )
    ).first()
    return TicketState.from_row(row) if row is not None else None


async def find_owner_and_order(uow: UnitOfWork, ticket_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID | None] | None:
    """The ticket's seller and the order reserving it, or None if there is no such ticket."""
    row = (
        await uow.session.execute(select(tickets.c.user_id, tickets.c.order_id).where(tickets.c.id == ticket_id))
    ).first()
    return (row.user_id, row.order_id) if row is not None else None


async def lock_ticket(uow: UnitOfWork, ticket_id: uuid.UUID) -> TicketState | None:
    """The ticket, locked until the transaction ends."""
    row = (await uow.session.execute(select(*_COLUMNS).where(tickets.c.id == ticket_id).with_for_update())).first()
    return TicketState.from_row(row) if row is not None else None


async def lock_order_version(uow: UnitOfWork, order_id: uuid.UUID) -> int | None:
    """The last applied version of an order, locked until the transaction ends; None if none is held."""
    version: int | None = (
        await uow.session.execute(
            select(order_versions.c.version).where(order_versions.c.order_id == order_id).with_for_update()
        )
    ).scalar_one_or_none()
    return version


async def insert_live_order(
    uow: UnitOfWork, *, order_id: uuid.UUID, ticket_id: uuid.UUID, version: int, expires_at: datetime, price: Decimal
) -> None:
    """Record a live (not cancelled) order of a ticket, with the price it was placed at."""
    await uow.session.execute(
        insert(order_versions).values(
            order_id=order_id, ticket_id=ticket_id, version=version, expires_at=expires_at, price=price, cancelled=False
        )
    )


async def cancel_order(uow: UnitOfWork, *, order_id: uuid.UUID, version: int) -> None:
    """Mark a recorded order cancelled at this version."""
    await uow.session.execute(
        update(order_versions).where(order_versions.c.order_id == order_id).values(version=version, cancelled=True)
    )


async def live_orders(uow: UnitOfWork, ticket_id: uuid.UUID, *, limit: int) -> list[tuple[uuid.UUID, Decimal | None]]:
    """Up to `limit` live orders of a ticket with the prices they were placed at, newest expiry first."""
    result = await uow.session.execute(
        select(order_versions.c.order_id, order_versions.c.price)
        .where(order_versions.c.ticket_id == ticket_id, order_versions.c.cancelled.is_(False))
        .order_by(order_versions.c.expires_at.desc(), order_versions.c.order_id.desc())
        .limit(limit)
    )
    return [(row.order_id, row.price) for row in result.all()]


async def set_holder(uow: UnitOfWork, ticket_id: uuid.UUID, holder: uuid.UUID | None, price: Decimal) -> TicketState:
    """Point the ticket at the order holding it (or none) at a price, and bump its version."""
    row = (
        await uow.session.execute(
            update(tickets)
            .where(tickets.c.id == ticket_id)
            .values(order_id=holder, price=price, version=tickets.c.version + 1)
            .returning(*_COLUMNS)
        )
    ).one()
    return TicketState.from_row(row)
