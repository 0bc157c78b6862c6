"""Cross-site request forgery: a form may be posted only from a page of this site.

The session cookie is SameSite=Lax, so browsers already leave it off cross-site POSTs; this checks the Origin (or,
without one, the Referer) of every unsafe request against the Host it was sent to, as a second line.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Receive, Scope, Send

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REFUSED = (
    "<!doctype html><title>Form refused</title><h1>Form refused</h1>"
    "<p>This form was not sent from a page of this site. Go back to the <a href='/'>marketplace</a> and try again.</p>"
)


def same_origin(headers: dict[str, str]) -> bool:
    """Whether the Origin, else the Referer, names the host the request was sent to."""
    host = headers.get("x-forwarded-host") or headers.get("host")
    source = headers.get("origin")
    if not source or source == "null":
        source = headers.get("referer")
    if not host or not source:
        return False
    return urlsplit(source).netloc.lower() == host.split(",")[0].strip().lower()


class CsrfMiddleware:
    """Pure ASGI middleware: a 403 page for an unsafe request from another origin."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # /api/ paths reach the client only when no service claims them; they get the JSON 404, not a form refusal.
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS and not scope["path"].startswith("/api"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            if not same_origin(headers):
                await HTMLResponse(REFUSED, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)
