"""The REST API as the visitor's browser would call it: their session cookie in, Set-Cookie back out."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from ticketing_client.settings import Settings
from ticketing_common.requestid import REQUEST_ID_HEADER, current_request_id

logger = logging.getLogger("ticketing.client.api")

SESSION_COOKIE = "session"
# The statuses a page can wait out: the API has not yet heard of what was just created (503), or a concurrent
# change won (409 is not retried: the visitor decides).
_RETRY_STATUSES = frozenset({503})


@dataclass(frozen=True)
class Visitor:
    """Who a page works for: their session cookie (if any) and their address, forwarded to the API."""

    session: str | None = None
    address: str | None = None
    forwarded_for: str | None = None


@dataclass(frozen=True)
class ApiResponse:
    """One API answer: status, decoded body (None when it was not JSON) and the Set-Cookie headers to relay."""

    status: int
    body: Any
    set_cookies: list[str] = field(default_factory=list)
    retry_after: float | None = None
    next_cursor: str | None = None

    @property
    def ok(self) -> bool:
        """2xx."""
        return 200 <= self.status < 300

    def errors(self) -> list[dict[str, str]]:
        """The contract's error entries, or none when the body is not in its shape."""
        if isinstance(self.body, dict) and isinstance(self.body.get("errors"), list):
            return [e for e in self.body["errors"] if isinstance(e, dict) and isinstance(e.get("message"), str)]
        return []


class ApiUnavailable(Exception):
    """The API could not be reached or did not answer in time."""


class ApiClient:
    """An httpx client over the API's base URL(s); one per process, shared by every request."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        # No cookie jar: one process serves every visitor, so a cookie must never outlive the request it came with.
        self._http = httpx.AsyncClient(
            timeout=settings.api_timeout_seconds, trust_env=False, follow_redirects=False, transport=transport
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        visitor: Visitor,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        wait_for_consistency: bool = False,
    ) -> ApiResponse:
        """Call the API for the visitor; with wait_for_consistency, retry a 503 briefly, as its Retry-After asks."""
        deadline = time.monotonic() + (self.settings.consistency_wait_seconds if wait_for_consistency else 0)
        delay = 0.1
        while True:
            response = await self._send(method, path, visitor, json=json, params=params)
            if response.status not in _RETRY_STATUSES or time.monotonic() + delay > deadline:
                return response
            logger.info("%s %s answered %d; retrying in %.1fs", method, path, response.status, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _send(
        self, method: str, path: str, visitor: Visitor, *, json: Any, params: dict[str, Any] | None
    ) -> ApiResponse:
        headers = {"Accept": "application/json"}
        if visitor.session:
            headers["Cookie"] = f"{SESSION_COOKIE}={visitor.session}"
        if request_id := current_request_id():
            headers[REQUEST_ID_HEADER] = request_id
        if visitor.address:
            chain = f"{visitor.forwarded_for}, {visitor.address}" if visitor.forwarded_for else visitor.address
            headers["X-Forwarded-For"] = chain
        url = self.settings.base_url_for(path) + path
        try:
            raw = await self._http.request(method, url, headers=headers, json=json, params=params)
        except httpx.HTTPError as exc:
            logger.warning("%s %s: the API is unreachable: %s", method, path, exc)
            raise ApiUnavailable(str(exc)) from exc
        try:
            body = raw.json() if raw.content else None
        except ValueError:
            body = None
        retry_after: float | None = None
        try:
            retry_after = float(raw.headers.get("Retry-After", ""))
        except ValueError:
            retry_after = None
        return ApiResponse(
            raw.status_code,
            body,
            raw.headers.get_list("set-cookie"),
            retry_after,
            raw.headers.get("X-Next-Cursor"),
        )
