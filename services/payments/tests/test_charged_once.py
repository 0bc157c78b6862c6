"""Never charged twice, counted on the provider's side: the fake provider's ledger outlives the payments process."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from ticketing_payments import service
from ticketing_payments.app import create_app
from ticketing_payments.models import Payment
from ticketing_payments.providers import FakeLedger, FakeProvider, charges_per_key
from ticketing_payments.settings import Settings
from ticketing_testing import make_user
from ticketing_testing.plugin import RunningService, ServiceStarter

URL = "/api/payments"


async def start_payments(start_service: ServiceStarter, ledger: Path, name: str) -> RunningService:
    """A payments process whose fake provider keeps its charges in `ledger`, as `make dev` runs it."""
    return await start_service(
        create_app, Settings, "ticketing_payments", fake_provider_ledger=ledger, nats_client_id=name
    )


async def test_a_charge_whose_commit_failed_is_not_charged_again_by_the_retry_after_a_restart(
    start_service: ServiceStarter, order_in, tmp_path: Path
) -> None:
    ledger = tmp_path / "fake-provider-ledger.sqlite3"
    first = await start_payments(start_service, ledger, "payments-first")
    user = make_user()
    order_id = (await order_in(first, user_id=user.id)).id

    # The window the create_payment docstring describes: the provider charged, then our commit failed.
    async def charge_then_lose_the_connection() -> None:
        async with first.runtime.database.transaction() as uow:
            await service.create_payment(
                uow=uow, provider=first.app.state.payment_provider, user_id=user.id, order_id=order_id, token="tok_visa"
            )
            # The connection dies between the charge and the commit, as when Postgres restarts or the pod is killed.
            backend = (await uow.connection()).get_server_pid()
            async with first.runtime.database.pool.acquire() as other:
                await other.execute("SELECT pg_terminate_backend($1)", backend)

    with pytest.raises(DBAPIError):
        await charge_then_lose_the_connection()
    assert charges_per_key(ledger) == {str(order_id): 1}  # Stripe's side has the charge...
    async with first.sessionmaker() as session:  # ...and we have no record of it
        assert (await session.execute(select(Payment).where(Payment.order_id == order_id))).first() is None

    # Another payments process (a restart, or another replica: a new fake provider, nothing in its memory) gets the
    # buyer's retry.
    second = await start_payments(start_service, ledger, "payments-second")
    provider = second.app.state.payment_provider
    assert isinstance(provider, FakeProvider)
    response = await second.client.post(URL, json={"token": "tok_visa", "orderId": str(order_id)}, headers=user.headers)

    assert response.status_code == 201, response.text
    assert charges_per_key(ledger) == {str(order_id): 1}
    [charge] = provider.charges
    async with second.sessionmaker() as session:
        [payment] = (await session.execute(select(Payment).where(Payment.order_id == order_id))).scalars()
    assert payment.stripe_id == charge.charge_id
    assert provider.calls == 1


async def test_two_providers_sharing_a_ledger_charge_a_key_once_however_the_calls_interleave(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    # Two processes' providers (replicas, or before and after a restart), each with its own connection to the file.
    providers = [FakeProvider(ledger=FakeLedger(ledger)), FakeProvider(ledger=FakeLedger(ledger))]
    keys = [str(uuid.uuid4()) for _ in range(5)]
    try:
        charges = await asyncio.gather(
            *(
                providers[i % 2].charge(
                    amount=Decimal("5.00"), currency="usd", token="tok_visa", idempotency_key=key, metadata={}
                )
                for i in range(40)
                for key in [keys[i % len(keys)]]
            )
        )
    finally:
        for provider in providers:
            await provider.close()
    assert charges_per_key(ledger) == dict.fromkeys(keys, 1)
    # Every call under one key got the one charge made for it.
    by_key: dict[str, set[str]] = {}
    for i, charge in enumerate(charges):
        by_key.setdefault(keys[i % len(keys)], set()).add(charge.id)
    assert all(len(ids) == 1 for ids in by_key.values())
