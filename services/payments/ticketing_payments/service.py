"""payments use cases: charge an order once, and keep the order replica in version order; no FastAPI, no SQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ticketing_common.errors import BadRequest, NotAuthorized, PaymentDeclined, ReplicaNotFound
from ticketing_common.events import OrderCreated, OrderStatus, PaymentCreated, stream_for
from ticketing_common.ids import find_in_replica
from ticketing_common.listener import durable_name, version_gate
from ticketing_common.uow import Database, UnitOfWork
from ticketing_payments import repository
from ticketing_payments.models import Order
from ticketing_payments.providers import InvalidPaymentToken, PaymentProvider
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
    order = await find_in_replica(order_id, lambda: repository.lock_order(uow, order_id))
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
    # Committed now, apart from this transaction: if we stop after the charge and before our commit and the buyer
    # does not retry, the reconciler finds this row and asks the provider what it charged.
    await repository.record_charge_attempt(uow, order.id)
    try:
        charge = await provider.charge(
            amount=order.price,
            currency=CURRENCY,
            token=token,
            idempotency_key=str(order.id),
            metadata={"orderId": str(order.id)},
        )
    except (PaymentDeclined, InvalidPaymentToken):  # the provider answered, and charged nothing
        await repository.forget_charge_attempt_now(uow, order.id)
        raise
    return await record_payment(uow, order, charge.id)


async def record_payment(uow: UnitOfWork, order: Order, stripe_id: str) -> uuid.UUID:
    """Record the provider's charge for the order and stage payment.created, in the caller's transaction."""
    payment_id = uuid.uuid4()
    if not await repository.add_payment(
        uow, payment_id=payment_id, order_id=order.id, stripe_id=stripe_id, amount=order.price
    ):
        # Unreachable while the row lock serialises payments; the unique index is the last word regardless.
        raise OrderAlreadyPaid()
    await repository.forget_charge_attempt(uow, order.id)
    uow.enqueue(PaymentCreated(id=payment_id, order_id=order.id, stripe_id=stripe_id))
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


logger = logging.getLogger("ticketing.payments")


@dataclass
class ChargeReconciler:
    """A worker that finishes what a stopped request left: a charge attempt with no payment and no request behind it.

    The request that charged an order holds the order's row lock until it commits; the reconciler takes the same
    lock, so it never races a live payment: once it holds it, the attempt's request has committed (and removed the
    attempt) or is gone. It then asks the provider for the order's charge (its idempotency key is the order id):
    found, the payment is recorded and payment.created published, as the request would have (orders completes the
    order, or marks a cancelled one for refund); not found, the attempt is dropped once it is `forget_seconds` old
    (Stripe's search may lag a minute; the fake provider's ledger does not).
    """

    database: Database
    provider: PaymentProvider
    every_seconds: float = 30.0
    min_age_seconds: float = 10.0
    forget_seconds: float = 3600.0
    batch: int = 100
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def start(self) -> None:
        """Reconcile in the background."""
        self._task = asyncio.create_task(self._run(), name="charge-reconciler")

    async def stop(self) -> None:
        """Stop reconciling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every_seconds)
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an outage, or the provider away: the next round tries again
                logger.warning("charge reconciler: round failed: %s", exc)

    async def run_once(self) -> int:
        """One round; returns how many charges it recorded."""
        async with self.database.transaction() as uow:
            stale = await repository.stale_charge_attempts(uow, self.min_age_seconds, self.batch)
        recorded = 0
        for order_id in stale:
            recorded += await self.reconcile(order_id)
        return recorded

    async def reconcile(self, order_id: uuid.UUID) -> int:
        """Settle one order's stale attempt; 1 if a charge was recorded."""
        async with self.database.transaction() as uow:
            order = await repository.lock_order(uow, order_id)  # waits for a live payment of it to end
            started = await repository.lock_charge_attempt(uow, order_id)
            if started is None:
                return 0  # settled meanwhile, or another replica is at it
            if order is None or await repository.order_has_payment(uow, order_id):
                await repository.forget_charge_attempt(uow, order_id)
                return 0
            charge = await self.provider.find_charge(idempotency_key=str(order_id), order_id=str(order_id))
            if charge is None:
                if datetime.now(UTC) - started >= timedelta(seconds=self.forget_seconds):
                    logger.info("charge reconciler: order %s was not charged; attempt dropped", order_id)
                    await repository.forget_charge_attempt(uow, order_id)
                return 0
            payment_id = await record_payment(uow, order, charge.id)
            logger.warning(
                "charge reconciler: order %s was charged (%s) but its payment was not recorded; recorded as %s",
                order_id,
                charge.id,
                payment_id,
            )
            return 1
