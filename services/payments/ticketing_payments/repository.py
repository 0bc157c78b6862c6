"""payments queries: every statement the service runs, and nothing else."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert

from ticketing_common.uow import UnitOfWork
from ticketing_payments.models import Order, Payment


@dataclass(frozen=True, slots=True)
class ReplicaOrder:
    """An order as order.created gives it to the replica."""

    id: uuid.UUID
    version: int
    user_id: uuid.UUID
    price: Decimal
    status: str
    expires_at: datetime


async def lock_order(uow: UnitOfWork, order_id: uuid.UUID) -> Order | None:
    """The replica's order, locked (FOR UPDATE) until the transaction ends, so payments for it run one at a time."""
    order: Order | None = (
        await uow.session.execute(select(Order).where(Order.id == order_id).with_for_update())
    ).scalar_one_or_none()
    return order


async def order_has_payment(uow: UnitOfWork, order_id: uuid.UUID) -> bool:
    """Whether a payment is recorded for the order."""
    return await uow.session.scalar(select(Payment.id).where(Payment.order_id == order_id)) is not None


async def add_payment(
    uow: UnitOfWork, *, payment_id: uuid.UUID, order_id: uuid.UUID, stripe_id: str, amount: Decimal
) -> bool:
    """Record a payment; False if the order already has one (its unique index is the last word)."""
    inserted = await uow.session.execute(
        insert(Payment)
        .values(id=payment_id, order_id=order_id, stripe_id=stripe_id, amount=amount)
        .on_conflict_do_nothing(index_elements=[Payment.order_id])
        .returning(Payment.id)
    )
    return inserted.first() is not None


async def lock_order_version(uow: UnitOfWork, order_id: uuid.UUID) -> int | None:
    """The replica's version of the order, locked until the transaction ends; None if it has none yet."""
    version: int | None = await uow.session.scalar(select(Order.version).where(Order.id == order_id).with_for_update())
    return version


async def insert_order(uow: UnitOfWork, order: ReplicaOrder) -> bool:
    """Add an order to the replica; False if it was there already."""
    inserted = await uow.session.execute(
        insert(Order)
        .values(
            id=order.id,
            version=order.version,
            user_id=order.user_id,
            price=order.price,
            status=order.status,
            expires_at=order.expires_at,
        )
        .on_conflict_do_nothing(index_elements=[Order.id])
        .returning(Order.id)
    )
    return inserted.first() is not None


async def set_order_status(uow: UnitOfWork, *, order_id: uuid.UUID, status: str, version: int) -> None:
    """Move a replica order to a status at a version."""
    await uow.session.execute(update(Order).where(Order.id == order_id).values(status=status, version=version))
