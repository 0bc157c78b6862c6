"""Size limits on what a client may send: the headers as a whole, and the body, checked before any route runs.

uvicorn's default HTTP parser (httptools) sets no limit on headers and no server we run limits bodies, so one client
could make a process hold as much memory as it cared to send. Every HTTP server we run (the services and the dev
gateway) wraps its app in this middleware; the Ingress carries the same body limit as an annotation.

FastAPI's own `max_body_size` (Starlette's RequestBodyLimitMiddleware) limits bodies too, but it answers a declared
oversized body in plain text, over any handler, and the contract wants every 4xx in its error shape.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Cookies and a Bearer token fit in a few KB; nginx's own default is 4 x 8 KB of header buffers.
MAX_HEADER_BYTES = 16 * 1024
# The largest body the API takes is a ticket: a title and a price. ingress-nginx's default proxy-body-size is 1m.
MAX_BODY_BYTES = 1024 * 1024


class RequestTooLarge(HTTPException):
    """The body went past the limit while it was being read (a chunked body declares no length up front).

    An HTTPException, so that a FastAPI app renders it as its other errors, and its body parser lets it through.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large(limit))


def _too_large(limit: int) -> str:
    return f"Request body is too large (at most {limit} bytes)"


class RequestLimitsMiddleware:
    """Pure ASGI: 431 for oversized headers, 413 for an oversized body, both in the contract's error shape."""

    def __init__(
        self, app: ASGIApp, *, max_header_bytes: int = MAX_HEADER_BYTES, max_body_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header_bytes = 0
        declared: int | None = None
        chunked = False
        for name, value in scope["headers"]:
            header_bytes += len(name) + len(value) + 4  # ": " and CRLF, as on the wire
            if name == b"content-length":
                declared = int(value) if value.isdigit() else None
            elif name == b"transfer-encoding":
                chunked = True
        if header_bytes > self.max_header_bytes:
            await _refuse(send, 431, "Request headers are too large")
            return
        if declared is not None and declared > self.max_body_bytes:
            await _refuse(send, 413, _too_large(self.max_body_bytes))
            return
        if not chunked:
            # No body, or one the server reads only up to its declared length: nothing left to count, so no
            # wrappers on the hot path (every GET, and every POST that declares its length).
            await self.app(scope, receive, send)
            return

        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise RequestTooLarge(self.max_body_bytes)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except RequestTooLarge as exc:  # an app that does not render HTTP errors itself, such as the gateway
            if not started:
                await _refuse(send, 413, str(exc.detail))


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"errors": [{"message": message}]}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
