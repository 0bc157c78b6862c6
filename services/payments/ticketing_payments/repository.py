"""payments queries: every statement the service runs, and nothing else."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert

from ticketing_common.uow import UnitOfWork
from ticketing_payments.models import ChargeAttempt, Order, Payment


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


async def record_charge_attempt(uow: UnitOfWork, order_id: uuid.UUID) -> None:
    """Note that the order is about to be charged, committed at once on a connection of its own (not this unit's
    transaction, which a crash after the charge would take back)."""
    async with uow.autocommit() as conn:
        await conn.execute(
            "INSERT INTO charge_attempts (order_id) VALUES ($1) ON CONFLICT (order_id) DO UPDATE SET started_at = now()",
            order_id,
        )


async def forget_charge_attempt(uow: UnitOfWork, order_id: uuid.UUID) -> None:
    """Drop the order's charge attempt with this transaction (its payment is recorded in it, or it charged nothing)."""
    await uow.session.execute(delete(ChargeAttempt).where(ChargeAttempt.order_id == order_id))


async def forget_charge_attempt_now(uow: UnitOfWork, order_id: uuid.UUID) -> None:
    """Drop the order's charge attempt at once: the provider said nothing was charged, and this transaction will
    roll back with the refusal."""
    async with uow.autocommit() as conn:
        await conn.execute("DELETE FROM charge_attempts WHERE order_id = $1", order_id)


async def stale_charge_attempts(uow: UnitOfWork, older_than_seconds: float, limit: int) -> list[uuid.UUID]:
    """Orders whose charge attempt is older than that: their request ended without recording the outcome."""
    rows = await uow.session.execute(
        select(ChargeAttempt.order_id)
        .where(ChargeAttempt.started_at <= func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_seconds))
        .order_by(ChargeAttempt.started_at)
        .limit(limit)
    )
    return list(rows.scalars())


async def lock_charge_attempt(uow: UnitOfWork, order_id: uuid.UUID) -> datetime | None:
    """When the order's charge attempt started, its row locked; None if it is gone or another replica holds it."""
    started: datetime | None = await uow.session.scalar(
        select(ChargeAttempt.started_at).where(ChargeAttempt.order_id == order_id).with_for_update(skip_locked=True)
    )
    return started
