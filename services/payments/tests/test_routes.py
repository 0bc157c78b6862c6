"""POST /api/payments with the fake provider, case by case as the contract lists them."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ticketing_common.db import OutboxEvent
from ticketing_common.events import OrderStatus
from ticketing_payments.models import Payment
from ticketing_payments.providers import FakeProvider
from ticketing_testing import EventCapture, make_user
from ticketing_testing.plugin import RunningService

URL = "/api/payments"


async def pay(payments: RunningService, headers: dict[str, str], order_id: uuid.UUID, token: str = "tok_visa"):
    return await payments.client.post(URL, json={"token": token, "orderId": str(order_id)}, headers=headers)


async def payments_of(payments: RunningService, order_id: uuid.UUID) -> list[Payment]:
    async with payments.sessionmaker() as session:
        return list((await session.execute(select(Payment).where(Payment.order_id == order_id))).scalars())


async def test_pays_for_an_order_and_publishes_payment_created(
    payments: RunningService, fake_provider: FakeProvider, make_order, events: EventCapture
) -> None:
    user = make_user()
    order = await make_order(user_id=user.id, price=Decimal("20.50"))

    response = await pay(payments, user.headers, order.id)

    assert response.status_code == 201
    body = response.json()
    assert body == {"id": body["id"]}
    [payment] = await payments_of(payments, order.id)
    assert str(payment.id) == body["id"]
    assert payment.amount == Decimal("20.50")
    [charge] = fake_provider.charges
    assert (charge.amount, charge.currency, charge.token) == (Decimal("20.50"), "usd", "tok_visa")
    assert charge.idempotency_key == str(order.id)
    assert charge.metadata == {"orderId": str(order.id)}
    assert payment.stripe_id == charge.charge_id
    published = await events.wait_for("payment.created")
    assert published == [{"id": body["id"], "orderId": str(order.id), "stripeId": charge.charge_id}]


async def test_requires_a_signed_in_user(payments: RunningService, make_order) -> None:
    order = await make_order()
    response = await payments.client.post(URL, json={"token": "tok_visa", "orderId": str(order.id)})
    assert response.status_code == 401
    assert response.json() == {"errors": [{"message": "Not authorized"}]}


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (
            {},
            [
                {"message": "Token must be provided", "field": "token"},
                {"message": "OrderId must be provided", "field": "orderId"},
            ],
        ),
        ({"orderId": str(uuid.uuid4())}, [{"message": "Token must be provided", "field": "token"}]),
        ({"token": "  ", "orderId": str(uuid.uuid4())}, [{"message": "Token must be provided", "field": "token"}]),
        ({"token": None, "orderId": str(uuid.uuid4())}, [{"message": "Token must be provided", "field": "token"}]),
        ({"token": "tok_visa"}, [{"message": "OrderId must be provided", "field": "orderId"}]),
        ({"token": "tok_visa", "orderId": ""}, [{"message": "OrderId must be provided", "field": "orderId"}]),
        (
            {"token": "tok_visa", "orderId": "not-an-id"},
            [{"message": "OrderId must be a valid id", "field": "orderId"}],
        ),
        ({"token": "tok_visa", "orderId": 12}, [{"message": "OrderId must be a valid id", "field": "orderId"}]),
        (
            {"token": 42, "orderId": str(uuid.uuid4())},
            [{"message": "Token must be a string of at most 255 characters", "field": "token"}],
        ),
    ],
)
async def test_rejects_missing_or_malformed_fields(payments: RunningService, body, errors) -> None:
    response = await payments.client.post(URL, json=body, headers=make_user().headers)
    assert response.status_code == 400
    assert response.json() == {"errors": errors}


async def test_malformed_json_is_a_400(payments: RunningService) -> None:
    response = await payments.client.post(
        URL, content=b'{"token": ', headers={**make_user().headers, "content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Request body must be valid JSON"}]}


async def test_an_unknown_order_is_404(payments: RunningService, fake_provider: FakeProvider) -> None:
    response = await pay(payments, make_user().headers, uuid.uuid4())
    assert response.status_code == 404
    assert response.json() == {"errors": [{"message": "Not Found"}]}
    assert fake_provider.charges == []


async def test_someone_elses_order_is_401(payments: RunningService, fake_provider: FakeProvider, make_order) -> None:
    order = await make_order()
    response = await pay(payments, make_user().headers, order.id)
    assert response.status_code == 401
    assert response.json() == {"errors": [{"message": "Not authorized"}]}
    assert fake_provider.charges == []


async def test_refuses_a_cancelled_order(payments: RunningService, fake_provider: FakeProvider, make_order) -> None:
    user = make_user()
    order = await make_order(user_id=user.id, status=OrderStatus.CANCELLED)
    response = await pay(payments, user.headers, order.id)
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Cannot pay for a cancelled order"}]}
    assert fake_provider.charges == []
    assert await payments_of(payments, order.id) == []


async def test_refuses_an_order_past_its_expiry(
    payments: RunningService, fake_provider: FakeProvider, make_order
) -> None:
    user = make_user()
    order = await make_order(user_id=user.id, expires_in=-1)
    response = await pay(payments, user.headers, order.id)
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Order has expired"}]}
    assert fake_provider.charges == []


async def test_a_second_payment_is_refused_and_never_charges_again(
    payments: RunningService, fake_provider: FakeProvider, make_order, events: EventCapture
) -> None:
    user = make_user()
    order = await make_order(user_id=user.id)
    assert (await pay(payments, user.headers, order.id)).status_code == 201

    again = await pay(payments, user.headers, order.id, token="tok_mastercard")

    assert again.status_code == 400
    assert again.json() == {"errors": [{"message": "Order already paid"}]}
    assert len(fake_provider.charges) == 1
    assert len(await payments_of(payments, order.id)) == 1


async def test_a_declined_card_is_402_and_records_nothing(
    payments: RunningService, fake_provider: FakeProvider, make_order
) -> None:
    user = make_user()
    order = await make_order(user_id=user.id)
    response = await pay(payments, user.headers, order.id, token="tok_chargeDeclined")
    assert response.status_code == 402
    assert response.json() == {"errors": [{"message": "Payment declined"}]}
    assert fake_provider.charges == []
    assert await payments_of(payments, order.id) == []
    async with payments.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(OutboxEvent)) == 0


async def test_after_a_decline_another_card_can_pay(
    payments: RunningService, fake_provider: FakeProvider, make_order
) -> None:
    user = make_user()
    order = await make_order(user_id=user.id)
    assert (await pay(payments, user.headers, order.id, token="tok_chargeDeclined")).status_code == 402
    assert (await pay(payments, user.headers, order.id, token="tok_visa")).status_code == 201
    assert len(fake_provider.charges) == 1


async def test_an_unknown_token_is_400(payments: RunningService, fake_provider: FakeProvider, make_order) -> None:
    user = make_user()
    order = await make_order(user_id=user.id)
    response = await pay(payments, user.headers, order.id, token="tok_nonsense")
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Invalid payment token", "field": "token"}]}
    assert fake_provider.charges == []


async def test_twenty_concurrent_payments_for_one_order_charge_once(
    payments: RunningService, fake_provider: FakeProvider, make_order, events: EventCapture
) -> None:
    user = make_user()
    order = await make_order(user_id=user.id)

    responses = await asyncio.gather(*(pay(payments, user.headers, order.id) for _ in range(20)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [400] * 19
    refusals = [r.json() for r in responses if r.status_code == 400]
    assert all(body == {"errors": [{"message": "Order already paid"}]} for body in refusals)
    assert len(fake_provider.charges) == 1
    # The row lock serialised them: the other 19 were refused before reaching the provider at all.
    assert fake_provider.calls == 1
    assert len(await payments_of(payments, order.id)) == 1
    await events.wait_for("payment.created")
    async with payments.sessionmaker() as session:
        staged = await session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.subject == "payment.created")
        )
    assert staged == 1


async def test_the_database_allows_one_payment_per_order(payments: RunningService, make_order) -> None:
    order = await make_order()
    async with payments.sessionmaker() as session, session.begin():
        session.add(Payment(order_id=order.id, stripe_id="pi_one", amount=order.price))
    with pytest.raises(IntegrityError):
        async with payments.sessionmaker() as session, session.begin():
            session.add(Payment(order_id=order.id, stripe_id="pi_two", amount=order.price))


async def test_health_readiness_metrics_and_docs(payments: RunningService) -> None:
    assert (await payments.client.get("/healthz")).json() == {"status": "ok"}
    assert (await payments.client.get("/readyz")).json() == {"status": "ready"}
    assert (await payments.client.get("/metrics")).status_code == 200
    docs = (await payments.client.get("/api/payments/openapi.json")).json()
    assert "/api/payments" in docs["paths"]
