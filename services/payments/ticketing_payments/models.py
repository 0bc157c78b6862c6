"""payments tables: a version-ordered replica of orders, and at most one payment per order."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Numeric, String, func
from sqlalchemy.orm import Mapped, mapped_column

from ticketing_common.db import model_registry

# A registry of its own, so this `orders` replica never clashes with the orders service's table in one process.
Base = model_registry()


class Order(Base):
    """What payments knows of an order, from order.created (v0) and order.cancelled (v1)."""

    __tablename__ = "orders"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version: Mapped[int]
    user_id: Mapped[uuid.UUID]
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    status: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[datetime]


class Payment(Base):
    """A successful charge; the unique order_id is the database's guarantee of one payment per order."""

    __tablename__ = "payments"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id"), unique=True)
    stripe_id: Mapped[str] = mapped_column(String(255))
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ChargeAttempt(Base):
    """An order being charged: committed on a connection of its own just before the provider is called, and deleted
    with the payment it leads to (or when the provider says nothing was charged).

    One left behind means the process stopped between the provider's charge and our commit, and the buyer did not
    retry: the reconciler (service.ChargeReconciler) asks the provider and records the charge it finds. No foreign
    key: the order's row is locked FOR UPDATE while this row is written from the other connection.
    """

    __tablename__ = "charge_attempts"

    order_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
