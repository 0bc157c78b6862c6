"""Payment providers behind one small interface: a fake for development and tests, and Stripe PaymentIntents."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

import stripe

from ticketing_common.errors import BadRequest, PaymentDeclined

logger = logging.getLogger("ticketing.payments.providers")


class InvalidPaymentToken(BadRequest):
    """The provider does not know the card token."""

    def __init__(self) -> None:
        super().__init__("Invalid payment token", field="token")


@dataclass(frozen=True)
class Charge:
    """A successful charge: the provider's id for it (a PaymentIntent id with Stripe)."""

    id: str


class PaymentProvider(Protocol):
    """Charges a card token once per idempotency key; raises PaymentDeclined or InvalidPaymentToken."""

    name: str

    async def charge(
        self, *, amount: Decimal, currency: str, token: str, idempotency_key: str, metadata: Mapping[str, str]
    ) -> Charge:
        """Charge `amount` (in major units) or return the charge already made under `idempotency_key`."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def to_minor_units(amount: Decimal) -> int:
    """Dollars to cents, exactly (prices have at most 2 decimals)."""
    return int((amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class FakeChargeRecord:
    """What the fake provider was asked to charge, for tests to count."""

    charge_id: str
    amount: Decimal
    currency: str
    token: str
    idempotency_key: str
    metadata: dict[str, str]


@dataclass
class FakeProvider:
    """Stripe's test tokens without the network: tok_visa succeeds, tok_chargeDeclined is declined, others are 400.

    Like Stripe it honours the idempotency key: a key already charged returns the same charge and charges nothing.
    Unlike Stripe it does not remember declines, so a declined order can be retried with another card.
    """

    name: str = "fake"
    succeeding_tokens: frozenset[str] = frozenset({"tok_visa", "tok_mastercard", "tok_amex"})
    declined_tokens: frozenset[str] = frozenset({"tok_chargeDeclined", "tok_chargeDeclinedInsufficientFunds"})
    charges: list[FakeChargeRecord] = field(default_factory=list)
    calls: int = 0
    _by_key: dict[str, Charge] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def charge(
        self, *, amount: Decimal, currency: str, token: str, idempotency_key: str, metadata: Mapping[str, str]
    ) -> Charge:
        """Charge once per idempotency key."""
        self.calls += 1
        async with self._lock:
            await asyncio.sleep(0)  # a real provider answers later: let concurrent requests interleave
            if idempotency_key in self._by_key:
                return self._by_key[idempotency_key]
            if token in self.declined_tokens:
                raise PaymentDeclined()
            if token not in self.succeeding_tokens:
                raise InvalidPaymentToken()
            charge = Charge(id=f"pi_fake_{uuid.uuid4().hex}")
            self._by_key[idempotency_key] = charge
            self.charges.append(FakeChargeRecord(charge.id, amount, currency, token, idempotency_key, dict(metadata)))
            return charge

    async def close(self) -> None:
        """Nothing to release."""


class StripeProvider:
    """Stripe PaymentIntents, created and confirmed in one call, through the official SDK."""

    name = "stripe"

    def __init__(
        self,
        *,
        api_key: str,
        http_client: stripe.HTTPClient | None = None,
        max_network_retries: int = 2,
        timeout_seconds: float = 30.0,
    ) -> None:
        # The SDK retries network failures and 409/5xx itself; our idempotency key makes those retries safe.
        self._http_client = http_client or stripe.HTTPXClient(timeout=timeout_seconds)
        self.client = stripe.StripeClient(
            api_key, http_client=self._http_client, max_network_retries=max_network_retries
        )

    @staticmethod
    def intent_params(*, amount: Decimal, currency: str, token: str, metadata: Mapping[str, str]) -> dict[str, Any]:
        """The PaymentIntent create-and-confirm request for a card token (tok_...) or a PaymentMethod (pm_...)."""
        params: dict[str, Any] = {
            "amount": to_minor_units(amount),
            "currency": currency,
            "confirm": True,
            # Cards only: other methods could need a redirect, and this API has no return_url to send.
            "payment_method_types": ["card"],
            "metadata": dict(metadata),
        }
        if token.startswith("pm_"):
            params["payment_method"] = token
        else:
            params["payment_method_data"] = {"type": "card", "card": {"token": token}}
        return params

    async def charge(
        self, *, amount: Decimal, currency: str, token: str, idempotency_key: str, metadata: Mapping[str, str]
    ) -> Charge:
        """Create and confirm a PaymentIntent under the idempotency key; declines become PaymentDeclined (402)."""
        params = self.intent_params(amount=amount, currency=currency, token=token, metadata=metadata)
        try:
            intent = await self.client.v1.payment_intents.create_async(
                params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        except stripe.CardError as exc:
            logger.info("stripe declined %s: %s (%s)", idempotency_key, exc.code, exc.request_id)
            raise PaymentDeclined() from None
        except stripe.InvalidRequestError as exc:
            if exc.param and ("token" in exc.param or "payment_method" in exc.param):
                raise InvalidPaymentToken() from None
            raise
        if intent.status != "succeeded":
            # requires_action (3-D Secure) and the like: nothing was captured, and this API cannot complete it.
            logger.info("stripe payment intent %s ended %s", intent.id, intent.status)
            raise PaymentDeclined("Payment requires authentication the card holder did not complete")
        return Charge(id=intent.id)

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        await self._http_client.close_async()


def make_provider(
    *, provider: str, stripe_key: str | None, timeout_seconds: float, max_network_retries: int
) -> PaymentProvider:
    """The provider PAYMENT_PROVIDER names."""
    if provider == "stripe":
        if not stripe_key:
            raise ValueError("STRIPE_KEY is missing; it is required when PAYMENT_PROVIDER=stripe")
        return StripeProvider(
            api_key=stripe_key, timeout_seconds=timeout_seconds, max_network_retries=max_network_retries
        )
    return FakeProvider()


@dataclass
class ProviderCloser:
    """A worker with nothing to run: it lets the app's lifespan close the provider's connections on shutdown."""

    provider: PaymentProvider

    async def start(self) -> None:
        """Nothing to start."""

    async def stop(self) -> None:
        """Close the provider."""
        await self.provider.close()
