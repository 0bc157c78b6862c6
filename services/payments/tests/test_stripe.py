"""The Stripe adapter, against the requests the official SDK would send (a recording HTTP client, no network)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

import pytest
import stripe

from ticketing_common.errors import PaymentDeclined
from ticketing_payments.app import create_app
from ticketing_payments.providers import InvalidPaymentToken, StripeProvider
from ticketing_payments.settings import Settings
from ticketing_testing import EventCapture, make_user
from ticketing_testing.plugin import RunningService, ServiceStarter

TEST_KEY = "sk_test_" + "a" * 40


@dataclass
class RecordedRequest:
    """One request the SDK sent."""

    method: str
    url: str
    headers: dict[str, str]
    form: dict[str, str]


class RecordingHTTPClient(stripe.HTTPClient):
    """Stands in for Stripe's servers: records each request and answers with the next canned (status, JSON)."""

    name = "recording"

    def __init__(self, *responses: tuple[int, dict[str, Any]]) -> None:
        super().__init__()
        self.responses = list(responses)
        self.requests: list[RecordedRequest] = []

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        form = {key: values[0] for key, values in parse_qs(post_data or "", keep_blank_values=True).items()}
        self.requests.append(RecordedRequest(method, url, dict(headers), form))
        status, body = self.responses.pop(0)
        return json.dumps(body).encode(), status, {"request-id": f"req_{uuid.uuid4().hex[:12]}"}

    def request(self, method: str, url: str, headers: Any, post_data: Any = None, **_: Any) -> Any:
        raise AssertionError("the adapter must use the async API")

    async def sleep_async(self, secs: float) -> None:  # type: ignore[override]
        return None

    async def close_async(self) -> None:
        return None

    def close(self) -> None:
        return None


def intent(status: str = "succeeded", *, amount: int = 2050) -> dict[str, Any]:
    """A PaymentIntent as Stripe returns it."""
    return {
        "id": f"pi_{uuid.uuid4().hex[:24]}",
        "object": "payment_intent",
        "amount": amount,
        "currency": "usd",
        "status": status,
        "metadata": {},
    }


def card_declined() -> dict[str, Any]:
    """Stripe's 402 body for a declined card."""
    return {
        "error": {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "generic_decline",
            "message": "Your card was declined.",
            "payment_intent": intent("requires_payment_method"),
        }
    }


async def charge(provider: StripeProvider, order_id: uuid.UUID, token: str = "tok_visa") -> Any:
    return await provider.charge(
        amount=Decimal("20.50"),
        currency="usd",
        token=token,
        idempotency_key=str(order_id),
        metadata={"orderId": str(order_id)},
    )


async def test_creates_and_confirms_a_payment_intent_keyed_by_the_order() -> None:
    reply = intent()
    http = RecordingHTTPClient((200, reply))
    provider = StripeProvider(api_key=TEST_KEY, http_client=http, max_network_retries=0)
    order_id = uuid.uuid4()

    result = await charge(provider, order_id)

    assert result.id == reply["id"]
    [request] = http.requests
    assert request.method == "post"
    assert request.url == "https://api.stripe.com/v1/payment_intents"
    assert request.form == {
        "amount": "2050",
        "currency": "usd",
        "confirm": "true",
        "payment_method_types[0]": "card",
        "payment_method_data[type]": "card",
        "payment_method_data[card][token]": "tok_visa",
        "metadata[orderId]": str(order_id),
    }
    assert request.headers["Idempotency-Key"] == str(order_id)
    assert request.headers["Authorization"] == f"Bearer {TEST_KEY}"


async def test_a_payment_method_id_is_sent_as_payment_method() -> None:
    http = RecordingHTTPClient((200, intent()))
    provider = StripeProvider(api_key=TEST_KEY, http_client=http, max_network_retries=0)
    await charge(provider, uuid.uuid4(), token="pm_card_visa")
    form = http.requests[0].form
    assert form["payment_method"] == "pm_card_visa"
    assert not any(key.startswith("payment_method_data") for key in form)


async def test_a_declined_card_raises_payment_declined() -> None:
    provider = StripeProvider(
        api_key=TEST_KEY, http_client=RecordingHTTPClient((402, card_declined())), max_network_retries=0
    )
    with pytest.raises(PaymentDeclined) as raised:
        await charge(provider, uuid.uuid4(), token="tok_chargeDeclined")
    assert raised.value.status_code == 402


async def test_an_unknown_token_raises_invalid_payment_token() -> None:
    body = {
        "error": {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "param": "payment_method_data[card][token]",
            "message": "No such token: 'tok_nope'",
        }
    }
    provider = StripeProvider(api_key=TEST_KEY, http_client=RecordingHTTPClient((400, body)), max_network_retries=0)
    with pytest.raises(InvalidPaymentToken):
        await charge(provider, uuid.uuid4(), token="tok_nope")


async def test_a_payment_that_needs_authentication_is_declined() -> None:
    provider = StripeProvider(
        api_key=TEST_KEY, http_client=RecordingHTTPClient((200, intent("requires_action"))), max_network_retries=0
    )
    with pytest.raises(PaymentDeclined):
        await charge(provider, uuid.uuid4())


async def test_a_retried_request_reuses_the_idempotency_key() -> None:
    http = RecordingHTTPClient((500, {"error": {"type": "api_error", "message": "boom"}}), (200, intent()))
    provider = StripeProvider(api_key=TEST_KEY, http_client=http, max_network_retries=1)
    order_id = uuid.uuid4()
    await charge(provider, order_id)
    assert [r.headers["Idempotency-Key"] for r in http.requests] == [str(order_id), str(order_id)]


async def test_the_service_pays_through_stripe_and_maps_a_decline_to_402(
    start_service: ServiceStarter, events: EventCapture, order_in
) -> None:
    reply = intent()
    http = RecordingHTTPClient((402, card_declined()), (200, reply))
    provider = StripeProvider(api_key=TEST_KEY, http_client=http, max_network_retries=0)
    payments: RunningService = await start_service(
        lambda settings: create_app(settings, provider=provider),
        Settings,
        "ticketing_payments",
        payment_provider="stripe",
        stripe_key=TEST_KEY,
    )
    user = make_user()
    order_id = (await order_in(payments, user_id=user.id)).id
    body = {"token": "tok_visa", "orderId": str(order_id)}

    declined = await payments.client.post("/api/payments", json=body, headers=user.headers)
    paid = await payments.client.post("/api/payments", json=body, headers=user.headers)

    assert declined.status_code == 402
    assert declined.json() == {"errors": [{"message": "Payment declined"}]}
    assert paid.status_code == 201
    assert [r.headers["Idempotency-Key"] for r in http.requests] == [str(order_id)] * 2
    assert http.requests[1].form["amount"] == "2050"
    published = await events.wait_for("payment.created")
    assert published == [{"id": paid.json()["id"], "orderId": str(order_id), "stripeId": reply["id"]}]


async def test_the_reconciler_finds_a_charge_by_searching_the_orders_succeeded_payment_intent() -> None:
    reply = intent()
    http = RecordingHTTPClient(
        (200, {"object": "search_result", "data": [reply], "has_more": False, "url": "/v1/payment_intents/search"}),
        (200, {"object": "search_result", "data": [], "has_more": False, "url": "/v1/payment_intents/search"}),
    )
    provider = StripeProvider(api_key=TEST_KEY, http_client=http, max_network_retries=0)
    order_id = str(uuid.uuid4())

    found = await provider.find_charge(idempotency_key=order_id, order_id=order_id)
    missing = await provider.find_charge(idempotency_key=order_id, order_id=order_id)

    assert found is not None and found.id == reply["id"]
    assert missing is None
    [first, _] = http.requests
    assert first.method == "get"
    query = parse_qs(first.url.split("?", 1)[1])["query"][0]
    assert query == f"metadata['orderId']:'{order_id}' AND status:'succeeded'"
    with pytest.raises(ValueError, match="not a UUID"):  # nothing but an order id goes into a search query
        await provider.find_charge(idempotency_key="x", order_id="x' OR status:'canceled")
