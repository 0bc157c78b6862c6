"""payments settings: which provider charges cards, and the Stripe key it needs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from ticketing_common.settings import LOCAL_ENVIRONMENTS, PLACEHOLDER_SECRETS, ServiceSettings


class Settings(ServiceSettings):
    """Environment of the payments service."""

    payment_provider: Literal["fake", "stripe"] = Field(
        default="fake", description="`fake` (tok_visa succeeds, tok_chargeDeclined is declined) or `stripe`"
    )
    stripe_key: str | None = Field(default=None, description="Stripe secret key (sk_...); required with stripe")
    stripe_timeout_seconds: float = Field(default=30.0, gt=0)
    stripe_max_network_retries: int = Field(default=2, ge=0, le=10)
    fake_provider_ledger: Path | None = Field(
        default=None,
        description="SQLite file standing for Stripe's records of the fake provider's charges, so they outlive a "
        "restart and are shared by replicas (`make dev` puts one in its state folder); in memory when unset",
    )

    charge_reconcile_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often each payments process looks for charges whose request stopped before recording them",
    )

    @model_validator(mode="after")
    def _stripe_key_for_stripe(self) -> Settings:
        # Not in secret_fields: that check is per class and would demand a STRIPE_KEY from fake-provider deployments.
        if self.payment_provider != "stripe":
            return self
        key = (self.stripe_key or "").strip()
        if not key:
            raise ValueError("STRIPE_KEY is missing; it is required when PAYMENT_PROVIDER=stripe")
        if self.environment not in LOCAL_ENVIRONMENTS and (
            key.lower() in PLACEHOLDER_SECRETS or not key.startswith(("sk_", "rk_"))
        ):
            raise ValueError(
                "STRIPE_KEY is a placeholder or not a Stripe secret key (sk_... or rk_...); "
                "set a real key (placeholders are only allowed with ENVIRONMENT=local)"
            )
        return self
