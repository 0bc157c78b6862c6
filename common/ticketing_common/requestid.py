"""The X-Request-ID of the request or event being handled, carried in a context variable."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
_VALID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    """The request id of the work in progress, if any."""
    return _request_id.get()


def set_request_id(value: str | None) -> None:
    """Set the request id for the current task (listeners call this per event)."""
    _request_id.set(value)


def is_sane_id(value: str) -> bool:
    """Whether an id from outside (a request id, an event's Nats-Msg-Id) is fit for logs and the bus tables."""
    return _VALID.match(value) is not None


def accept_request_id(value: str | None) -> str:
    """The client's id when it is sane, else a new one; never trust arbitrary bytes into logs."""
    if value and is_sane_id(value):
        return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Pure ASGI middleware: assigns the request id and echoes it on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = accept_request_id(incoming)
        scope.setdefault("state", {})["request_id"] = request_id
        token = _request_id.set(request_id)
        raw = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", raw))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)
