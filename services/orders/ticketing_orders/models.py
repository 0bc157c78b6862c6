"""orders tables: the replica of tickets, and orders with one live reservation per ticket."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Index, Numeric, String, text
from sqlalchemy.orm import Mapped, mapped_column

from ticketing_common.db import model_registry
from ticketing_common.events import OrderStatus
from ticketing_common.ids import new_id

# Statuses that hold the ticket: at most one order per ticket may be in one of them.
RESERVING_STATUSES: tuple[OrderStatus, ...] = (OrderStatus.CREATED, OrderStatus.AWAITING_PAYMENT, OrderStatus.COMPLETE)
# Statuses from which an order may still be cancelled or completed.
OPEN_STATUSES: tuple[OrderStatus, ...] = (OrderStatus.CREATED, OrderStatus.AWAITING_PAYMENT)
RESERVED_INDEX = "uq_orders_ticket_id_reserving"
REFUND_PENDING = "pending"


def sql_list(values: tuple[OrderStatus, ...]) -> str:
    """Statuses as an SQL list (`'created', 'awaiting:payment'`), so SQL is built from the typed rule."""
    return ", ".join(f"'{value.value}'" for value in values)


# A registry of its own: this `tickets` replica must not clash with the tickets service's table in one process.
Base = model_registry()


class Ticket(Base):
    """The orders service's copy of a ticket, kept in version order from ticket.* events."""

    __tablename__ = "tickets"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    version: Mapped[int]
    # The seller, so nobody orders their own ticket; null only for rows replicated before orders kept it.
    user_id: Mapped[uuid.UUID | None]
    # Informational only: the reservation truth for orders is its own orders table.
    order_id: Mapped[uuid.UUID | None]


class Order(Base):
    """A user's reservation of a ticket until expires_at; created, then cancelled or complete."""

    __tablename__ = "orders"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID]
    ticket_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tickets.id"))
    status: Mapped[str] = mapped_column(String(20))
    # The price the order was placed at: what it shows and what payments charges, whatever later edits do.
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    expires_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime]
    # Set by payment.created; a payment that met a cancelled order also sets refund_status.
    payment_id: Mapped[uuid.UUID | None]
    stripe_id: Mapped[str | None] = mapped_column(String(255))
    refund_status: Mapped[str | None] = mapped_column(String(20))

    __table_args__ = (
        CheckConstraint(f"status IN ({sql_list(tuple(OrderStatus))})", name="status_known"),
        CheckConstraint("refund_status IN ('pending', 'refunded')", name="refund_status_known"),
        # The double-booking guard: the database, not the application, admits one live order per ticket.
        Index(
            RESERVED_INDEX,
            "ticket_id",
            unique=True,
            postgresql_where=text(f"status IN ({sql_list(RESERVING_STATUSES)})"),
        ),
        # GET /api/orders: a user's orders newest first, by keyset.
        Index("ix_orders_user_id_created_at_id", "user_id", text("created_at DESC"), text("id DESC")),
    )
