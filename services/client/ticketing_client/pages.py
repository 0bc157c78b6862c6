"""Rendering: the templates, the filters they use, and the responses every page shares."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from ticketing_client.api import ApiResponse
from ticketing_client.deps import Page
from ticketing_client.service import Problems

PACKAGE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=PACKAGE / "templates")

STATUS_LABELS = {
    "created": "Reserved",
    "awaiting:payment": "Awaiting payment",
    "complete": "Complete",
    "cancelled": "Cancelled",
}


def format_price(value: Any) -> str:
    """A price with 2 decimals and its currency: 20 -> "$20.00"."""
    try:
        amount = Decimal(str(value)).quantize(Decimal("0.01"))
    except (InvalidOperation, ValueError):
        return str(value)
    return f"${amount:,}"


def parse_time(value: str) -> datetime:
    """An API time (ISO-8601 in UTC, ending in Z)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def seconds_left(expires_at: str, now: datetime | None = None) -> int:
    """Whole seconds until a time, never negative."""
    remaining = (parse_time(expires_at) - (now or datetime.now(UTC))).total_seconds()
    return max(0, math.ceil(remaining))


templates.env.filters["price"] = format_price
templates.env.filters["status_label"] = lambda status: STATUS_LABELS.get(status, status)
templates.env.filters["urlquote"] = lambda value: quote(str(value), safe="")


def render(request: Request, page: Page, name: str, status_code: int = 200, **context: Any) -> Response:
    """A template, with the signed-in user for the navigation."""
    context.setdefault("problems", Problems())
    return templates.TemplateResponse(
        request, name, {"user": page.user, "settings": page.settings, **context}, status_code=status_code
    )


def error_page(request: Request, page: Page, problems: Problems, status_code: int, title: str = "Sorry") -> Response:
    """A whole page for an error that has no form to show it beside."""
    return render(request, page, "error.html", status_code=status_code, title=title, problems=problems)


def api_error_page(request: Request, page: Page, response: ApiResponse) -> Response:
    """An API error as a page with a readable sentence, at the status that fits (5xx becomes 503: try again)."""
    titles = {404: "Not found", 401: "Not allowed"}
    status_code = response.status if response.status < 500 else 503
    return error_page(request, page, Problems.of(response), status_code, titles.get(response.status, "Sorry"))


def safe_next(target: str | None, default: str = "/") -> str:
    """A local path to return to after signing in; anything else (another site, //host) goes home."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def sign_in_first(next_path: str) -> RedirectResponse:
    """Send a signed-out visitor to sign in, and back here afterwards."""
    return RedirectResponse(f"/auth/signin?next={quote(next_path, safe='/')}", status_code=303)


def see_other(path: str, api_response: ApiResponse | None = None) -> RedirectResponse:
    """Redirect after a POST, relaying any session cookie the API set or cleared."""
    response = RedirectResponse(path, status_code=303)
    for cookie in api_response.set_cookies if api_response else []:
        response.headers.append("set-cookie", cookie)
    return response
