"""Not found, or not yet? payments answers 503 'not yet known' for an order while its order.created consumer is behind."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from nats.aio.client import Client as NATS

from ticketing_common import ids
from ticketing_common.events import OrderCreated, OrderStatus, OrderTicket
from ticketing_common.ids import new_id
from ticketing_payments.listeners import OrderCreatedListener
from ticketing_testing import eventually, id_minted, make_user
from ticketing_testing.plugin import RunningService


# A short ack_wait: a pull the stopped listener left outstanding gives its event back in 3 s, not the default 30.
@pytest.mark.parametrize("payments", [pytest.param({"nats_ack_wait_seconds": 3}, id="ack-wait-3s")], indirect=True)
async def test_an_order_its_replica_has_not_heard_of_yet_is_503_not_yet_known_then_payable(
    payments: RunningService, nats_client: NATS
) -> None:
    user = make_user()
    [listener] = [li for li in payments.runtime.listeners if isinstance(li, OrderCreatedListener)]
    await listener.stop()  # the consumer falls behind: order.created waits undelivered
    event = OrderCreated(
        id=uuid.uuid4(),
        version=0,
        status=OrderStatus.CREATED,
        user_id=user.id,
        expires_at=datetime.now(UTC) + timedelta(minutes=15),
        ticket=OrderTicket(id=uuid.uuid4(), price=Decimal("12.00")),
    )
    await nats_client.jetstream().publish(event.subject, event.to_bytes(), headers={"Nats-Msg-Id": str(event.event_id)})
    body = {"token": "tok_visa", "orderId": str(event.id)}

    response = await payments.client.post("/api/payments", json=body, headers=user.headers)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    assert response.json() == {"errors": [{"message": "Not yet known; retry shortly"}]}

    await listener.start()  # caught up: the same request now succeeds, as the client's retry would

    async def paid() -> bool:
        answer = await payments.client.post("/api/payments", json=body, headers=user.headers)
        return answer.status_code == 201

    # A pull the stopped subscription had outstanding may hold the event until its ack_wait has passed.
    await eventually(paid, timeout=listener.effective_ack_wait + 10)


async def test_an_order_a_caught_up_replica_does_not_hold_is_404(payments: RunningService) -> None:
    user = make_user()
    body = {"token": "tok_visa", "orderId": str(uuid.uuid4())}
    response = await payments.client.post("/api/payments", json=body, headers=user.headers)
    assert response.status_code == 404
    assert "Retry-After" not in response.headers


async def test_an_order_minted_moments_ago_that_no_event_has_brought_is_503_not_yet_known(
    payments: RunningService,
) -> None:
    """Orders committed it, but its order.created still waits in orders' outbox: the consumer is caught up with the
    stream, yet the order exists. Its UUIDv7 id says it is seconds old, so the answer is "not yet", not 404."""
    user = make_user()
    body = {"token": "tok_visa", "orderId": str(id_minted(seconds_ago=2))}
    response = await payments.client.post("/api/payments", json=body, headers=user.headers)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    assert response.json() == {"errors": [{"message": "Not yet known; retry shortly"}]}


async def test_an_order_id_minted_before_the_window_or_beyond_the_clock_skew_is_404(
    payments: RunningService,
) -> None:
    user = make_user()
    window = payments.settings.not_yet_known_seconds
    for order_id in (id_minted(seconds_ago=window + 5), id_minted(seconds_ago=-3600)):
        body = {"token": "tok_visa", "orderId": str(order_id)}
        response = await payments.client.post("/api/payments", json=body, headers=user.headers)
        assert response.status_code == 404, (order_id, response.text)
        assert "Retry-After" not in response.headers


async def test_an_order_whose_event_lands_while_the_request_waits_is_paid_without_a_503(
    payments: RunningService, nats_client: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The common case of "pay right after ordering": the order's event is milliseconds behind the request."""
    monkeypatch.setattr(ids, "REPLICA_WAIT_SECONDS", 10.0)  # room for a loaded machine; it returns on arrival
    user = make_user()
    event = OrderCreated(
        id=new_id(),  # minted by orders a moment ago
        version=0,
        status=OrderStatus.CREATED,
        user_id=user.id,
        expires_at=datetime.now(UTC) + timedelta(minutes=15),
        ticket=OrderTicket(id=uuid.uuid4(), price=Decimal("12.00")),
    )
    body = {"token": "tok_visa", "orderId": str(event.id)}
    paying = asyncio.create_task(payments.client.post("/api/payments", json=body, headers=user.headers))
    await asyncio.sleep(0.05)  # the request has looked once and is waiting
    assert not paying.done()
    await nats_client.jetstream().publish(event.subject, event.to_bytes(), headers={"Nats-Msg-Id": str(event.event_id)})
    response = await paying
    assert response.status_code == 201, response.text
