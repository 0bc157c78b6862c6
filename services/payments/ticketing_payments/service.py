"""payments use cases: charge an order once, and keep the order replica in version order; no FastAPI, no SQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from ticketing_common.errors import BadRequest, NotAuthorized, ReplicaNotFound
from ticketing_common.events import OrderCreated, OrderStatus, PaymentCreated, stream_for
from ticketing_common.listener import durable_name, version_gate
from ticketing_common.uow import UnitOfWork
from ticketing_payments import repository
from ticketing_payments.providers import PaymentProvider
from ticketing_payments.repository import ReplicaOrder

__all__ = ["ReplicaOrder"]

CURRENCY = "usd"


class OrderNotFound(ReplicaNotFound):
    """No order with that id has reached payments (503 "not yet known" while its order.created consumer is behind)."""

    replica_stream = stream_for(OrderCreated.subject)
    replica_durable = durable_name("payments", OrderCreated.subject)


class CancelledOrderPayment(BadRequest):
    """A payment for a cancelled order."""

    def __init__(self) -> None:
        super().__init__("Cannot pay for a cancelled order")


class OrderAlreadyPaid(BadRequest):
    """A second payment for an order that has one."""

    def __init__(self) -> None:
        super().__init__("Order already paid")


class OrderExpired(BadRequest):
    """A payment after the order's reservation ended (rule 9: late payments are refused, not lost)."""

    def __init__(self) -> None:
        super().__init__("Order has expired")


async def create_payment(
    *,
    uow: UnitOfWork,
    provider: PaymentProvider,
    user_id: uuid.UUID,
    order_id: uuid.UUID,
    token: str,
    now: datetime | None = None,
) -> uuid.UUID:
    """Charge the caller's order once and stage payment.created with the payment row.

    The provider is called inside this transaction while it holds the order row's lock (SELECT ... FOR UPDATE), so
    payments for one order run one at a time: the second sees the first's payment and is refused without calling
    the provider. If the commit fails after a successful charge, a retry reaches the provider with the same
    idempotency key (the order id) and gets the same charge back, so the customer is never charged twice.
    """
    order = await repository.lock_order(uow, order_id)
    if order is None:
        raise OrderNotFound(order_id)
    if order.user_id != user_id:
        raise NotAuthorized()
    if order.status == OrderStatus.CANCELLED:
        raise CancelledOrderPayment()
    if await repository.order_has_payment(uow, order.id):
        raise OrderAlreadyPaid()
    if order.expires_at <= (now or datetime.now(UTC)):
        raise OrderExpired()
    charge = await provider.charge(
        amount=order.price,
        currency=CURRENCY,
        token=token,
        idempotency_key=str(order.id),
        metadata={"orderId": str(order.id)},
    )
    payment_id = uuid.uuid4()
    if not await repository.add_payment(
        uow, payment_id=payment_id, order_id=order.id, stripe_id=charge.id, amount=order.price
    ):
        # Unreachable while the row lock serialises payments; the unique index is the last word regardless.
        raise OrderAlreadyPaid()
    uow.enqueue(PaymentCreated(id=payment_id, order_id=order.id, stripe_id=charge.id))
    return payment_id


async def record_order_created(*, uow: UnitOfWork, order: ReplicaOrder) -> bool:
    """Add an order to the replica (version 0); a duplicate or older event changes nothing."""
    if not version_gate(await repository.lock_order_version(uow, order.id), order.version):
        return False
    return await repository.insert_order(uow, order)


async def record_order_cancelled(*, uow: UnitOfWork, order_id: uuid.UUID, version: int) -> bool:
    """Mark a replica order cancelled; an old or equal version is ignored, one ahead of the create waits for it."""
    if not version_gate(await repository.lock_order_version(uow, order_id), version):
        return False
    await repository.set_order_status(uow, order_id=order_id, status=OrderStatus.CANCELLED.value, version=version)
    return True
