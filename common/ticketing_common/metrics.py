"""Prometheus metrics every service exposes on /metrics: on a port of its own when METRICS_PORT is set."""

from __future__ import annotations

import time
from wsgiref.simple_server import WSGIServer

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest, start_http_server
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Histogram(
    "ticketing_http_request_seconds",
    "HTTP requests by route template and status",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
EVENTS_PUBLISHED = Counter("ticketing_events_published_total", "Outbox events acknowledged by JetStream")
EVENTS_HANDLED = Counter(
    "ticketing_events_handled_total", "Events handled by consumers, by outcome", ["consumer", "outcome"]
)

DEAD_LETTERS = Gauge(
    "ticketing_dead_letters",
    "Dead letters waiting for an operator (neither retried nor dropped), by service and subject",
    ["service", "subject"],
)


PARKED_EVENTS = Gauge(
    "ticketing_parked_events",
    "Events that arrived before their predecessor and wait for it, parked, by service and subject",
    ["service", "subject"],
)


def set_parked_events(service: str, counts: dict[str, int]) -> None:
    """Publish a service's parked events per subject (counted from its database with the dead letters)."""
    for subject, count in counts.items():
        PARKED_EVENTS.labels(service, subject).set(count)


def set_dead_letters(service: str, counts: dict[str, int]) -> None:
    """Publish a service's waiting dead letters per subject (counted from its database on a timer)."""
    for subject, count in counts.items():
        DEAD_LETTERS.labels(service, subject).set(count)


class MetricsMiddleware:
    """Pure ASGI middleware timing each request under its route template (not its raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            HTTP_REQUESTS.labels(scope["method"], template, str(status)).observe(time.perf_counter() - start)


class MetricsServer:
    """/metrics on a port of its own, apart from the API port, so a NetworkPolicy can open it to monitoring only.

    prometheus_client's own exposition server, in a thread; it serves the process's default registry.
    """

    def __init__(self, port: int, host: str) -> None:
        self.port = port
        self.host = host
        self._server: WSGIServer | None = None

    def start(self) -> None:
        """Listen and serve until stop()."""
        self._server, _ = start_http_server(self.port, addr=self.host)

    def stop(self) -> None:
        """Stop serving and close the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def serve_on_app_port(app: FastAPI) -> None:
    """GET /metrics on the app's own port: for a process given no METRICS_PORT (the tests)."""

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        """Prometheus exposition."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
