"""payments app factory; the only wiring of the service."""

from __future__ import annotations

from fastapi import FastAPI

from ticketing_common.app import ServiceSpec, create_service_app
from ticketing_common.settings import load_settings
from ticketing_payments.listeners import LISTENERS
from ticketing_payments.providers import PaymentProvider, ProviderCloser, make_provider
from ticketing_payments.routes import router
from ticketing_payments.schemas import ORDER_ID_MISSING, TOKEN_MISSING
from ticketing_payments.service import ChargeReconciler
from ticketing_payments.settings import Settings


def create_app(settings: Settings | None = None, *, provider: PaymentProvider | None = None) -> FastAPI:
    """Build the payments service (run with `uvicorn --factory ticketing_payments.app:create_app`)."""
    settings = settings or load_settings(Settings)
    provider = provider or make_provider(
        provider=settings.payment_provider,
        stripe_key=settings.stripe_key,
        timeout_seconds=settings.stripe_timeout_seconds,
        max_network_retries=settings.stripe_max_network_retries,
        fake_ledger=settings.fake_provider_ledger,
    )
    app = create_service_app(
        ServiceSpec(
            name="payments",
            package="ticketing_payments",
            api_prefix="/api/payments",
            settings=settings,
            routers=[router],
            listeners=LISTENERS,
            workers=[
                lambda _runtime: ProviderCloser(provider),
                lambda runtime: ChargeReconciler(runtime.database, provider),
            ],
            missing_messages={"token": TOKEN_MISSING, "orderId": ORDER_ID_MISSING},
            description="Charge an order once through the payment provider; publishes payment.created.",
            replicas={"orders": ()},
        )
    )
    app.state.payment_provider = provider
    return app
