"""expiration app factory; the only wiring of the service."""

from __future__ import annotations

from fastapi import FastAPI

from ticketing_common.app import ServiceSpec, create_service_app
from ticketing_common.settings import load_settings
from ticketing_expiration.listeners import listeners
from ticketing_expiration.scheduler import WakeUps
from ticketing_expiration.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the expiration service (run with `uvicorn --factory ticketing_expiration.app:create_app`)."""
    wake_ups = WakeUps()
    return create_service_app(
        ServiceSpec(
            name="expiration",
            package="ticketing_expiration",
            # No public routes: only /healthz, /readyz and /metrics; the prefix places the docs page.
            api_prefix="/api/expiration",
            settings=settings or load_settings(Settings),
            listeners=listeners(wake_ups),
            workers=[wake_ups.scheduler],
            description="Order expiration: durable timers that publish expiration.complete.",
            replicas={"expiration_jobs": ("created_at", "fired_at", "cancelled_at")},
        )
    )
