"""orders app factory; the only wiring of the service."""

from __future__ import annotations

from fastapi import FastAPI

from ticketing_common.app import ServiceSpec, create_service_app
from ticketing_common.settings import load_settings
from ticketing_orders.listeners import LISTENERS
from ticketing_orders.routes import router
from ticketing_orders.schemas import TICKET_ID_MISSING
from ticketing_orders.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the orders service (run with `uvicorn --factory ticketing_orders.app:create_app`)."""
    return create_service_app(
        ServiceSpec(
            name="orders",
            package="ticketing_orders",
            api_prefix="/api/orders",
            settings=settings or load_settings(Settings),
            routers=[router],
            listeners=LISTENERS,
            missing_messages={"ticketId": TICKET_ID_MISSING},
            description="Reserve a ticket for a limited time; cancel, expire, and complete on payment.",
            replicas={"tickets": ()},
        )
    )
