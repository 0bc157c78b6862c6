"""auth app factory; the only wiring of the service."""

from __future__ import annotations

from fastapi import FastAPI

from ticketing_auth.listeners import LISTENERS
from ticketing_auth.routes import router
from ticketing_auth.settings import Settings
from ticketing_common.app import ServiceSpec, create_service_app
from ticketing_common.settings import load_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the auth service (run with `uvicorn --factory ticketing_auth.app:create_app`)."""
    return create_service_app(
        ServiceSpec(
            name="auth",
            package="ticketing_auth",
            api_prefix="/api/users",
            settings=settings or load_settings(Settings),
            routers=[router],
            listeners=LISTENERS,
            description="Sign-up, sign-in and sessions.",
        )
    )
