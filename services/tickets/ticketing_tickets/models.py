"""tickets tables: the tickets themselves, and the last version seen of each order that touched one."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, Index, Numeric, String, Table, func, text
from sqlalchemy.orm import Mapped, mapped_column

from ticketing_common.db import model_registry
from ticketing_common.ids import new_id

Base = model_registry()


class Ticket(Base):
    """A ticket for sale; `order_id` is set while an order reserves it."""

    __tablename__ = "tickets"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    title: Mapped[str] = mapped_column(String(200))
    # Exact money: NUMERIC, never a float.
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    user_id: Mapped[uuid.UUID]
    order_id: Mapped[uuid.UUID | None]
    version: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        CheckConstraint("price > 0", name="price_positive"),
        CheckConstraint("version >= 0", name="version_not_negative"),
        # The public list: unreserved tickets, newest first, paged by (created_at, id).
        Index(
            "ix_tickets_unreserved_newest",
            text("created_at DESC"),
            text("id DESC"),
            postgresql_where=text("order_id IS NULL"),
        ),
    )


class OrderVersion(Base):
    """The last version of an order this service applied, and whether that order still holds its ticket.

    Order events apply in version order and once; a ticket's reservation is worked out from the live
    (created, not cancelled) orders recorded here, so the outcome does not depend on arrival order.
    """

    __tablename__ = "order_versions"

    order_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    ticket_id: Mapped[uuid.UUID]
    version: Mapped[int]
    expires_at: Mapped[datetime]
    # The price the order was placed at (order.created's ticket.price): a reserved ticket shows it.
    price: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    cancelled: Mapped[bool] = mapped_column(default=False, server_default=text("false"))

    __table_args__ = (
        Index(
            "ix_order_versions_live",
            "ticket_id",
            text("expires_at DESC"),
            postgresql_where=text("NOT cancelled"),
        ),
    )


# Core handles for the hot paths: statements without the ORM's unit of work.
tickets: Table = Ticket.__table__  # type: ignore[assignment]
order_versions: Table = OrderVersion.__table__  # type: ignore[assignment]
