"""A charge whose request stopped before its commit, with no retry from the buyer, is found and recorded anyway."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from ticketing_common.db import OutboxEvent
from ticketing_payments import service
from ticketing_payments.app import create_app
from ticketing_payments.models import ChargeAttempt, Payment
from ticketing_payments.providers import charges_per_key
from ticketing_payments.settings import Settings
from ticketing_testing import make_user
from ticketing_testing.plugin import RunningService, ServiceStarter


async def start_payments(start_service: ServiceStarter, ledger: Path) -> RunningService:
    return await start_service(create_app, Settings, "ticketing_payments", fake_provider_ledger=ledger)


def reconciler(payments: RunningService, **overrides: float) -> service.ChargeReconciler:
    """The service's reconciler, run by hand here (its worker waits 30 s between rounds)."""
    [worker] = [w for w in payments.runtime.workers if isinstance(w, service.ChargeReconciler)]
    provider = payments.app.state.payment_provider
    assert worker.provider is provider
    return service.ChargeReconciler(payments.runtime.database, provider, **{"min_age_seconds": 0, **overrides})


async def attempts(payments: RunningService) -> list[uuid.UUID]:
    async with payments.sessionmaker() as session:
        return list((await session.execute(select(ChargeAttempt.order_id))).scalars())


async def payments_of(payments: RunningService, order_id: uuid.UUID) -> list[Payment]:
    async with payments.sessionmaker() as session:
        return list((await session.execute(select(Payment).where(Payment.order_id == order_id))).scalars())


async def test_a_charge_whose_commit_was_lost_and_never_retried_is_recorded_and_published(
    start_service: ServiceStarter, order_in, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    payments = await start_payments(start_service, ledger)
    user = make_user()
    order = await order_in(payments, user_id=user.id)

    # The provider charged, then the connection died before the commit (a pod killed, Postgres restarting).
    async def charge_then_lose_the_connection() -> None:
        async with payments.runtime.database.transaction() as uow:
            await service.create_payment(
                uow=uow,
                provider=payments.app.state.payment_provider,
                user_id=user.id,
                order_id=order.id,
                token="tok_visa",
            )
            backend = (await uow.connection()).get_server_pid()
            async with payments.runtime.database.pool.acquire() as other:
                await other.execute("SELECT pg_terminate_backend($1)", backend)

    with pytest.raises(DBAPIError):
        await charge_then_lose_the_connection()
    assert charges_per_key(ledger) == {str(order.id): 1}
    assert await payments_of(payments, order.id) == []
    assert await attempts(payments) == [order.id]  # committed apart from the lost transaction

    # The buyer never retries. A round of the reconciler finds the charge at the provider and records it.
    assert await reconciler(payments).run_once() == 1
    [payment] = await payments_of(payments, order.id)
    [charge] = payments.app.state.payment_provider.charges
    assert (payment.stripe_id, payment.amount) == (charge.charge_id, order.price)
    assert await attempts(payments) == []
    async with payments.sessionmaker() as session:
        staged = (await session.execute(select(OutboxEvent).where(OutboxEvent.subject == "payment.created"))).scalars()
        [event] = [json.loads(row.payload) for row in staged]
    assert event == {"id": str(payment.id), "orderId": str(order.id), "stripeId": charge.charge_id}
    # Settled: another round (or a late retry by the buyer) changes nothing and charges nothing.
    assert await reconciler(payments).run_once() == 0
    response = await payments.client.post(
        "/api/payments", json={"token": "tok_visa", "orderId": str(order.id)}, headers=user.headers
    )
    assert response.json() == {"errors": [{"message": "Order already paid"}]}
    assert charges_per_key(ledger) == {str(order.id): 1}


async def test_a_paid_order_and_a_declined_card_leave_no_attempt_behind(payments: RunningService, make_order) -> None:
    user = make_user()
    paid, declined = await make_order(user_id=user.id), await make_order(user_id=user.id)
    ok = await payments.client.post(
        "/api/payments", json={"token": "tok_visa", "orderId": str(paid.id)}, headers=user.headers
    )
    refused = await payments.client.post(
        "/api/payments", json={"token": "tok_chargeDeclined", "orderId": str(declined.id)}, headers=user.headers
    )
    assert (ok.status_code, refused.status_code) == (201, 402)
    assert await attempts(payments) == []


async def test_an_attempt_the_provider_never_charged_is_kept_a_while_then_dropped(
    payments: RunningService, make_order
) -> None:
    order = await make_order()
    # The process stopped after noting the attempt and before the provider charged anything.
    async with payments.runtime.database.transaction() as uow:
        await service.repository.record_charge_attempt(uow, order.id)
    assert await reconciler(payments).run_once() == 0
    assert await attempts(payments) == [order.id]  # Stripe's search may lag: one miss proves nothing yet
    assert await reconciler(payments, forget_seconds=0).run_once() == 0
    assert await attempts(payments) == []
    assert await payments_of(payments, order.id) == []


async def test_the_reconciler_waits_for_a_live_payment_of_the_order_instead_of_racing_it(
    payments: RunningService, make_order
) -> None:
    user = make_user()
    order = await make_order(user_id=user.id)
    provider = payments.app.state.payment_provider
    async with payments.runtime.database.transaction() as uow:
        # A live request: it noted its attempt and holds the order's lock while the provider works.
        await service.repository.lock_order(uow, order.id)
        await service.repository.record_charge_attempt(uow, order.id)
        round_ = asyncio.create_task(reconciler(payments).run_once())
        await asyncio.sleep(0.3)
        assert not round_.done()  # waiting on the order's lock, not deciding behind the request's back
        charge = await provider.charge(
            amount=order.price, currency="usd", token="tok_visa", idempotency_key=str(order.id), metadata={}
        )
        await service.record_payment(uow, order, charge.id)
    assert await round_ == 0
    assert [p.stripe_id for p in await payments_of(payments, order.id)] == [charge.id]
    assert await attempts(payments) == []
