"""tickets use cases: plain async functions over a unit of work; no FastAPI, no SQL (that is repository.py)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal

from ticketing_common.errors import BadRequest, Conflict, NotAuthorized, NotFound, ServiceUnavailable
from ticketing_common.events import TicketCreated, TicketUpdated
from ticketing_common.ids import new_id
from ticketing_common.listener import EventOutOfOrder, version_gate
from ticketing_common.pagination import PageCursor
from ticketing_common.uow import UnitOfWork
from ticketing_tickets import repository
from ticketing_tickets.repository import TicketState

__all__ = ["TicketState"]

logger = logging.getLogger("ticketing.tickets")


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


class OrderMayHoldTicket(ServiceUnavailable):
    """An order for the ticket may be on its way: order events are not all applied yet (503, Retry-After: 1)."""

    message = "The ticket may be held by an order being placed; retry shortly"
    retry_after = 1


OrderEventsPending = Callable[[], Awaitable[bool]]
"""Asks whether order events are still on their way to tickets (its consumers of them are behind)."""


def _ticket_updated(ticket: TicketState) -> TicketUpdated:
    return TicketUpdated(
        id=ticket.id,
        version=ticket.version,
        title=ticket.title,
        price=ticket.price,
        user_id=ticket.user_id,
        order_id=ticket.order_id,
    )


async def create_ticket(*, uow: UnitOfWork, user_id: uuid.UUID, title: str, price: Decimal) -> TicketState:
    """List a ticket for sale at version 0 and write ticket.created, atomically."""
    ticket = TicketState(id=new_id(), title=title, price=price, user_id=user_id, version=0, order_id=None)
    event = TicketCreated(id=ticket.id, version=0, title=title, price=price, user_id=user_id)
    await repository.insert_ticket(uow, ticket, event)
    return ticket


async def get_ticket(*, uow: UnitOfWork, ticket_id: uuid.UUID) -> TicketState:
    """One ticket, or TicketNotFound."""
    ticket = await repository.find_ticket(uow, ticket_id)
    if ticket is None:
        raise TicketNotFound()
    return ticket


async def list_unreserved_tickets(
    *, uow: UnitOfWork, limit: int, after: PageCursor | None = None
) -> tuple[list[TicketState], PageCursor | None]:
    """A page of unreserved tickets, newest first, and the cursor of the next page (None on the last)."""
    rows = await repository.list_unreserved(uow, limit=limit + 1, after=after)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last, created_at = rows[-1]
        next_cursor = PageCursor(created_at, last.id)
    return [ticket for ticket, _ in rows], next_cursor


async def update_ticket(
    *,
    uow: UnitOfWork,
    ticket_id: uuid.UUID,
    user_id: uuid.UUID,
    title: str,
    price: Decimal,
    order_events_pending: OrderEventsPending,
) -> TicketState:
    """Change a ticket's title and price, bump its version and stage ticket.updated.

    One conditional UPDATE decides: it only matches the owner's unreserved ticket, and Postgres re-checks
    that condition after waiting for any concurrent writer's row lock. So concurrent edits (and an order
    reserving the ticket meanwhile) serialize: each edit that succeeds gets its own version, none is lost,
    and an edit never lands on a ticket that got reserved while it waited.

    An order that orders has placed but tickets has not applied yet is invisible to that UPDATE, so before
    committing, with the ticket's row lock held, the edit asks whether any order event is still on its way
    (issue 15 #3). If one is, the edit is rolled back and answered OrderMayHoldTicket (503, retry); the retry
    meets the applied order (400 reserved) or a settled ticket (200). Holding the lock makes the question
    exact for every event already on the bus: one that tickets is applying waits for this lock, so it is
    still unacked. An order whose event orders' relay has not yet published is not seen; _settle_reservation
    gives the order its price back when that event arrives.
    """
    ticket = await repository.update_unreserved_ticket(
        uow, ticket_id=ticket_id, user_id=user_id, title=title, price=price
    )
    if ticket is None:
        raise await _why_not_editable(uow, ticket_id, user_id)
    if await order_events_pending():
        raise OrderMayHoldTicket()
    uow.enqueue(_ticket_updated(ticket))
    return ticket


async def _why_not_editable(uow: UnitOfWork, ticket_id: uuid.UUID, user_id: uuid.UUID) -> Exception:
    # Only reached on the unhappy path, so the happy path stays one statement.
    found = await repository.find_owner_and_order(uow, ticket_id)
    if found is None:
        return TicketNotFound()
    owner, order_id = found
    if owner != user_id:
        return NotTicketOwner()
    if order_id is not None:
        return TicketReserved()
    # It was reserved when the UPDATE looked and released since: the caller may simply retry.
    return TicketChanged()


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
    *,
    uow: UnitOfWork,
    order_id: uuid.UUID,
    order_version: int,
    ticket_id: uuid.UUID,
    expires_at: datetime,
    price: Decimal,
) -> None:
    """Apply order.created: record the live order and its price, and settle who reserves its ticket."""
    # Every order event for a ticket takes the ticket's lock first, so they apply one at a time per ticket.
    ticket = await repository.lock_ticket(uow, ticket_id)
    if not version_gate(await repository.lock_order_version(uow, order_id), order_version):
        return
    await repository.insert_live_order(
        uow, order_id=order_id, ticket_id=ticket_id, version=order_version, expires_at=expires_at, price=price
    )
    if ticket is None:
        # Orders only learns tickets from our own ticket.created, so this is a data problem, not a race.
        logger.warning("order %s reserves ticket %s, which tickets does not have; ignored", order_id, ticket_id)
        return
    await _settle_reservation(uow, ticket)


async def release_ticket(*, uow: UnitOfWork, order_id: uuid.UUID, order_version: int, ticket_id: uuid.UUID) -> None:
    """Apply order.cancelled: mark the order cancelled and settle who reserves its ticket."""
    ticket = await repository.lock_ticket(uow, ticket_id)
    if not cancellation_applies(await repository.lock_order_version(uow, order_id), order_version):
        return
    await repository.cancel_order(uow, order_id=order_id, version=order_version)
    if ticket is not None:
        await _settle_reservation(uow, ticket)


async def _settle_reservation(uow: UnitOfWork, ticket: TicketState) -> None:
    """Point the ticket at its live order (or none); on a change bump the version and stage ticket.updated.

    Orders lets at most one order hold a ticket at a time, so once every event has arrived at most one
    recorded order is live. Before that, an order.created can arrive while an older order's cancellation
    is still on its way: then the newest (latest expiresAt) live order is shown, which is the one that
    will remain. The result depends only on which events were applied, never on their arrival order.

    A reserved ticket shows the price its order was placed at. They differ only when the seller's edit reached
    tickets before an order that orders had already placed on the earlier version (issue 15 #3): the order
    wins, since it is what the buyer pays, so the edit's price gives way and is published as undone.
    """
    live = await repository.live_orders(uow, ticket.id, limit=2)
    if len(live) > 1:
        logger.warning(
            "ticket %s has several live orders (%s); showing the newest until the others' cancellations arrive",
            ticket.id,
            ", ".join(str(order_id) for order_id, _ in live),
        )
    holder, held_price = live[0] if live else (None, None)
    price = ticket.price if held_price is None else held_price
    if holder == ticket.order_id and price == ticket.price:
        return
    if price != ticket.price:
        logger.warning(
            "ticket %s was edited to %s while order %s was placed at %s: the order's price stands",
            ticket.id,
            ticket.price,
            holder,
            price,
        )
    uow.enqueue(_ticket_updated(await repository.set_holder(uow, ticket.id, holder, price)))
