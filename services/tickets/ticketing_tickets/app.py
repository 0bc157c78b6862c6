"""tickets app factory; the only wiring of the service."""

from __future__ import annotations

from fastapi import FastAPI

from ticketing_common.app import ServiceSpec, create_service_app
from ticketing_common.settings import load_settings
from ticketing_common.validation import PRICE_MESSAGE
from ticketing_tickets.listeners import LISTENERS
from ticketing_tickets.routes import router
from ticketing_tickets.schemas import TITLE_MESSAGE
from ticketing_tickets.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the tickets service (run with `uvicorn --factory ticketing_tickets.app:create_app`)."""
    return create_service_app(
        ServiceSpec(
            name="tickets",
            package="ticketing_tickets",
            api_prefix="/api/tickets",
            settings=settings or load_settings(Settings),
            routers=[router],
            listeners=LISTENERS,
            missing_messages={"title": TITLE_MESSAGE, "price": PRICE_MESSAGE},
            description="Tickets for sale: list, show, create and edit; reserved by orders through events.",
            replicas={"order_versions": ()},
        )
    )
