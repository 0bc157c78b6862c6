"""client app factory; the only wiring of the web client."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ticketing_client.api import ApiClient, Visitor
from ticketing_client.csrf import CsrfMiddleware
from ticketing_client.deps import Page
from ticketing_client.pages import PACKAGE, error_page
from ticketing_client.routes import router
from ticketing_client.service import Problems
from ticketing_client.settings import Settings
from ticketing_common.errors import error_body
from ticketing_common.logs import configure_logging
from ticketing_common.metrics import MetricsMiddleware, MetricsServer, serve_on_app_port
from ticketing_common.requestid import RequestIdMiddleware
from ticketing_common.settings import describe_validation_error

logger = logging.getLogger("ticketing.client")

# Pages never belong in a frame of another site, and the Referer stays on this site (the CSRF check reads it).
SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeadersMiddleware:
    """Pure ASGI middleware adding SECURITY_HEADERS to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def load_settings() -> Settings:
    """Read settings, or end the process with one clear line naming what is missing or invalid."""
    try:
        return Settings()
    except ValidationError as error:
        print(f"configuration error: {describe_validation_error(error)}", file=sys.stderr)
        raise SystemExit(2) from None


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the web client (run with `uvicorn --factory ticketing_client.app:create_app`)."""
    settings = settings or load_settings()
    configure_logging("client", settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics_server = MetricsServer(settings.metrics_port, settings.metrics_host) if settings.metrics_port else None
        if metrics_server is not None:
            metrics_server.start()
        app.state.api = ApiClient(settings)
        logger.info("client started; the API is at %s", settings.api_url or settings.api_backends)
        try:
            yield
        finally:
            await app.state.api.aclose()
            if metrics_server is not None:
                metrics_server.stop()

    app = FastAPI(
        title="ticketing client",
        description="The web client: server-rendered pages over the public REST API.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.add_middleware(CsrfMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    app.mount("/static", StaticFiles(directory=PACKAGE / "static"), name="static")
    app.include_router(router)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path == "/api" or request.url.path.startswith("/api/"):
            # The Ingress sends the client every path no API prefix claims: an unknown API route still gets the
            # contract's JSON 404, as the gateway gives it.
            return JSONResponse(error_body("Not Found"), status_code=404)
        problems = Problems(
            general=["We could not find that page." if exc.status_code == 404 else "That did not work."]
        )
        return error_page(request, _bare_page(request), problems, exc.status_code, "Not found")

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        problems = Problems(general=["Something went wrong on our side. Please try again."])
        return error_page(request, _bare_page(request), problems, 500, "Sorry")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness: the process is up."""
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        """Readiness: the lifespan has run. The API's health is not ours: with a backend down, the pages still
        answer and say so, rather than the ingress answering 503 for the whole site."""
        if getattr(request.app.state, "api", None) is None:
            return JSONResponse({"errors": [{"message": "Starting"}]}, status_code=503)
        return JSONResponse({"status": "ready"})

    if settings.metrics_port is None:
        # Without a metrics port (unit tests) /metrics is on the page port. The Ingress's "/" rule reaches the client,
        # so wherever the suite is deployed (Kubernetes, `make dev`) METRICS_PORT is set, and /metrics is only there.
        serve_on_app_port(app)

    return app


def _bare_page(request: Request) -> Page:
    # An error page outside the routes knows no user: the navigation shows the signed-out links.
    return Page(request.app.state.api, Visitor(), None, request.app.state.settings)
