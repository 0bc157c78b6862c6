"""Payment providers behind one small interface: a fake for development and tests, and Stripe PaymentIntents."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
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

    async def find_charge(self, *, idempotency_key: str, order_id: str) -> Charge | None:
        """The successful charge made for the order under that key, if the provider holds one."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def to_minor_units(amount: Decimal) -> int:
    """Dollars to cents, exactly (prices have at most 2 decimals)."""
    return int((amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class FakeChargeRecord:
    """One charge the fake provider made, as its ledger (Stripe's side) holds it."""

    charge_id: str
    amount: Decimal
    currency: str
    token: str
    idempotency_key: str
    metadata: dict[str, str]


_LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    charge_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    token TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS charges_by_key ON charges (idempotency_key);
"""


class FakeLedger:
    """The fake provider's record of charges: what Stripe's side would hold, outside the payments process.

    A SQLite file of its own (or memory, for one process's tests), so it outlives a killed payments process and is
    shared by every replica, as Stripe's records are. It is an append-only list, deliberately not unique by
    idempotency key: a second charge under one key would be stored, and `charges_per_key` would show it.
    """

    def __init__(self, path: Path | str = ":memory:") -> None:
        self.path = str(path)
        # One connection, used from worker threads one call at a time (the provider's lock); autocommit, so each
        # charge is its own BEGIN IMMEDIATE transaction and processes sharing the file take turns.
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        # WAL with synchronous=NORMAL: a commit survives the process being killed (not a power cut, which a stand-in
        # for Stripe need not), without an fsync per charge while payments holds the order's row lock.
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_LEDGER_SCHEMA)

    def charge_once(self, key: str, record: Callable[[], FakeChargeRecord | None]) -> FakeChargeRecord | None:
        """The charge already made under `key`, or the new one `record()` makes (None: nothing charged), stored."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = self.find(key)
            if found is not None:
                conn.execute("COMMIT")
                return found
            charge = record()
            if charge is not None:
                conn.execute(
                    "INSERT INTO charges (charge_id, idempotency_key, amount, currency, token, metadata)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        charge.charge_id,
                        charge.idempotency_key,
                        str(charge.amount),
                        charge.currency,
                        charge.token,
                        json.dumps(charge.metadata, sort_keys=True),
                    ),
                )
            conn.execute("COMMIT")
            return charge
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def find(self, key: str) -> FakeChargeRecord | None:
        """The charge made under `key`, if any."""
        row = self._conn.execute(
            "SELECT charge_id, amount, currency, token, idempotency_key, metadata FROM charges"
            " WHERE idempotency_key = ? ORDER BY seq LIMIT 1",
            (key,),
        ).fetchone()
        return None if row is None else _record(row)

    def charges(self) -> list[FakeChargeRecord]:
        """Every charge made, oldest first."""
        rows = self._conn.execute(
            "SELECT charge_id, amount, currency, token, idempotency_key, metadata FROM charges ORDER BY seq"
        ).fetchall()
        return [_record(row) for row in rows]

    def close(self) -> None:
        """Close the connection; the file stays."""
        self._conn.close()


def _record(row: tuple[str, str, str, str, str, str]) -> FakeChargeRecord:
    charge_id, amount, currency, token, key, metadata = row
    return FakeChargeRecord(charge_id, Decimal(amount), currency, token, key, json.loads(metadata))


def charges_per_key(path: Path | str) -> Counter[str]:
    """How many charges a fake provider's ledger file holds per idempotency key (each must be 1), e.g. for chaos."""
    ledger = FakeLedger(path)
    try:
        return Counter(charge.idempotency_key for charge in ledger.charges())
    finally:
        ledger.close()


@dataclass
class FakeProvider:
    """Stripe's test tokens without the network: tok_visa succeeds, tok_chargeDeclined is declined, others are 400.

    Like Stripe it honours the idempotency key: a key already charged returns the same charge and charges nothing,
    also after the payments process restarted, since the charges live in the ledger (FAKE_PROVIDER_LEDGER).
    Unlike Stripe it does not remember declines, so a declined order can be retried with another card.
    """

    name: str = "fake"
    succeeding_tokens: frozenset[str] = frozenset({"tok_visa", "tok_mastercard", "tok_amex"})
    declined_tokens: frozenset[str] = frozenset({"tok_chargeDeclined", "tok_chargeDeclinedInsufficientFunds"})
    ledger: FakeLedger = field(default_factory=FakeLedger)
    calls: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def charges(self) -> list[FakeChargeRecord]:
        """Every charge in the ledger, oldest first (other processes' too when the ledger is a shared file)."""
        return self.ledger.charges()

    async def charge(
        self, *, amount: Decimal, currency: str, token: str, idempotency_key: str, metadata: Mapping[str, str]
    ) -> Charge:
        """Charge once per idempotency key."""
        self.calls += 1

        def new_charge() -> FakeChargeRecord | None:
            if token in self.declined_tokens or token not in self.succeeding_tokens:
                return None
            return FakeChargeRecord(
                f"pi_fake_{uuid.uuid4().hex}", amount, currency, token, idempotency_key, dict(metadata)
            )

        async with self._lock:
            await asyncio.sleep(0)  # a real provider answers later: let concurrent requests interleave
            charged = await asyncio.to_thread(self.ledger.charge_once, idempotency_key, new_charge)
        if charged is not None:
            return Charge(id=charged.charge_id)
        if token in self.declined_tokens:
            raise PaymentDeclined()
        raise InvalidPaymentToken()

    async def find_charge(self, *, idempotency_key: str, order_id: str) -> Charge | None:
        """The charge the ledger holds under the key, as Stripe's records would."""
        async with self._lock:
            found = await asyncio.to_thread(self.ledger.find, idempotency_key)
        return None if found is None else Charge(id=found.charge_id)

    async def close(self) -> None:
        """Close the ledger's connection."""
        self.ledger.close()


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

    async def find_charge(self, *, idempotency_key: str, order_id: str) -> Charge | None:
        """A succeeded PaymentIntent whose metadata names the order (Stripe's search; its index may lag about a
        minute, so the reconciler asks again until the attempt is old, rather than concluding from one miss)."""
        if not _SAFE_SEARCH_VALUE.fullmatch(order_id):
            raise ValueError("order id is not a UUID")
        found = await self.client.v1.payment_intents.search_async(
            {"query": f"metadata['orderId']:'{order_id}' AND status:'succeeded'", "limit": 1}
        )
        return Charge(id=found.data[0].id) if found.data else None

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        await self._http_client.close_async()


# What may go into a Stripe search query between quotes: our order ids only.
_SAFE_SEARCH_VALUE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def make_provider(
    *,
    provider: str,
    stripe_key: str | None,
    timeout_seconds: float,
    max_network_retries: int,
    fake_ledger: Path | None = None,
) -> PaymentProvider:
    """The provider PAYMENT_PROVIDER names."""
    if provider == "stripe":
        if not stripe_key:
            raise ValueError("STRIPE_KEY is missing; it is required when PAYMENT_PROVIDER=stripe")
        return StripeProvider(
            api_key=stripe_key, timeout_seconds=timeout_seconds, max_network_retries=max_network_retries
        )
    return FakeProvider(ledger=FakeLedger(fake_ledger or ":memory:"))


@dataclass
class ProviderCloser:
    """A worker with nothing to run: it lets the app's lifespan close the provider's connections on shutdown."""

    provider: PaymentProvider

    async def start(self) -> None:
        """Nothing to start."""

    async def stop(self) -> None:
        """Close the provider."""
        await self.provider.close()
