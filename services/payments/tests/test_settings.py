"""payments settings: the provider choice and the Stripe key it needs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ticketing_common.settings import describe_validation_error
from ticketing_payments.settings import Settings

PRODUCTION_JWT = "a-production-jwt-key-that-is-long-enough-0123"


def settings(**values: Any) -> Settings:
    base: dict[str, Any] = {
        "database_url": "postgresql://u:p@db/payments",
        "nats_url": "nats://nats:4222",
        "nats_client_id": "payments-0",
        "jwt_key": PRODUCTION_JWT,
        "nats_nkey_seed": "SU" + "A" * 56,
    }
    return Settings(**{**base, **values})


def test_the_fake_provider_is_the_default_and_needs_no_stripe_key() -> None:
    assert settings().payment_provider == "fake"


def test_stripe_without_a_key_is_refused_with_one_clear_line() -> None:
    with pytest.raises(ValidationError) as raised:
        settings(payment_provider="stripe")
    assert "STRIPE_KEY is missing" in describe_validation_error(raised.value)


@pytest.mark.parametrize("key", ["changeme", "secret", "not-a-stripe-key-but-long-enough-123456"])
def test_stripe_with_a_placeholder_key_is_refused_in_production(key: str) -> None:
    with pytest.raises(ValidationError) as raised:
        settings(payment_provider="stripe", stripe_key=key)
    assert "STRIPE_KEY is a placeholder" in describe_validation_error(raised.value)


def test_a_placeholder_stripe_key_is_allowed_in_local_development() -> None:
    assert settings(environment="local", payment_provider="stripe", stripe_key="changeme").stripe_key == "changeme"


def test_a_real_looking_stripe_key_is_accepted() -> None:
    assert settings(payment_provider="stripe", stripe_key="sk_live_" + "x" * 24).payment_provider == "stripe"


def test_an_unknown_provider_is_refused() -> None:
    with pytest.raises(ValidationError) as raised:
        settings(payment_provider="paypal")
    assert "PAYMENT_PROVIDER is invalid" in describe_validation_error(raised.value)
