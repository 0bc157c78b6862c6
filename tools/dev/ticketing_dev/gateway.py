"""The local dev gateway: routes like the cluster's Ingress, read from the same manifest. A dev tool only.

In Kubernetes, ingress-nginx serves infra/k8s/base/ingress.yaml. `make dev` serves the same file with this small
ASGI reverse proxy, so local and cluster routing cannot drift apart: each backend Service `<svc>-srv` maps to the
local address of service <svc>, and paths match as Kubernetes defines them (Exact, or Prefix element by element;
the longest path wins, Exact before Prefix on a tie). Like nginx, it matches the normalised path (percent-decoded, dot
segments resolved, repeated slashes merged), forwards that same path, and refuses a path that climbs above the root or
holds control characters with 400, so `/api/users/../../metrics` cannot reach a service's internal routes. Host rules are not enforced locally, so the suite answers on
127.0.0.1 as well as on ticketing.dev. It forwards cookies and every other end-to-end header, sets X-Request-ID and
X-Forwarded-For/-Proto/-Host/-Port, and streams bodies both ways.
"""

from __future__ import annotations

import http.cookiejar
import json
import logging
import time
import unicodedata
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from starlette.types import Message, Receive, Scope, Send

from ticketing_common.requestid import accept_request_id

logger = logging.getLogger("ticketing.gateway")

# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection and are never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_HOP_BY_HOP_BYTES = frozenset(h.encode() for h in HOP_BY_HOP)
# The server that runs the gateway writes its own Date and Server; nginx, too, hides the upstream's.
_OWN_RESPONSE_HEADERS = _HOP_BY_HOP_BYTES | {b"date", b"server"}
# What a path may hold unencoded when it is forwarded (RFC 3986 pchar and "/").
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


@dataclass(frozen=True)
class Route:
    """One path of an Ingress rule: where it matches and which Service port gets the request."""

    path: str
    path_type: str
    service: str
    port: int | str
    host: str | None = None

    def matches(self, path: str) -> bool:
        """Kubernetes path matching: Exact is the whole path; Prefix compares whole path elements."""
        if self.path_type == "Exact":
            return path == self.path
        prefix = self.path.rstrip("/")
        if not prefix:
            return True
        return path == prefix or path.startswith(prefix + "/")


class IngressError(ValueError):
    """The manifest holds no usable Ingress."""


def load_routes(manifest: Path | str) -> list[Route]:
    """Every path of every Ingress in a (multi-document) manifest."""
    routes: list[Route] = []
    text = Path(manifest).read_text()
    for document in yaml.safe_load_all(text):
        if not isinstance(document, dict) or document.get("kind") != "Ingress":
            continue
        for rule in document.get("spec", {}).get("rules", []) or []:
            for item in (rule.get("http") or {}).get("paths", []) or []:
                backend = item.get("backend", {}).get("service", {})
                port = backend.get("port", {})
                routes.append(
                    Route(
                        path=item.get("path") or "/",
                        path_type=item.get("pathType", "Prefix"),
                        service=backend["name"],
                        port=port.get("number") or port.get("name") or 80,
                        host=rule.get("host"),
                    )
                )
    if not routes:
        raise IngressError(f"no Ingress paths in {manifest}")
    return routes


class BadPath(ValueError):
    """A request path that no route may see: it climbs above the root, or holds control characters."""


def normalize_path(path: str) -> str:
    """The decoded path as nginx matches it: dot segments resolved and repeated slashes merged, trailing slash kept."""
    if not path.startswith("/"):
        raise BadPath("the path must start with /")
    if any(unicodedata.category(ch) == "Cc" for ch in path):
        raise BadPath("the path holds a control character")
    kept: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not kept:
                raise BadPath("the path climbs above the root")
            kept.pop()
        else:
            kept.append(segment)
    trailing = path.endswith(("/", "/.", "/..")) and bool(kept)
    return "/" + "/".join(kept) + ("/" if trailing else "")


def match_route(routes: Iterable[Route], path: str) -> Route | None:
    """The route for a path: the longest matching path, Exact before Prefix on a tie (as ingress-nginx does)."""
    best: Route | None = None
    for route in routes:
        if not route.matches(path):
            continue
        if best is None or _rank(route) > _rank(best):
            best = route
    return best


def _rank(route: Route) -> tuple[int, int]:
    return len(route.path.rstrip("/")), 1 if route.path_type == "Exact" else 0


def _error(message: str) -> bytes:
    # The contract's error shape (ticketing_common.errors.error_body), built here to keep FastAPI out of the runner.
    return json.dumps({"errors": [{"message": message}]}).encode()


class Gateway:
    """An ASGI reverse proxy over the Ingress routes; backends maps `<svc>-srv` to a base URL."""

    def __init__(
        self,
        routes: list[Route],
        backends: Mapping[str, str],
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.routes = routes
        self.backends = dict(backends)
        self.timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # trust_env=False: a developer's HTTP(S)_PROXY must not capture loopback traffic.
            self._client = httpx.AsyncClient(
                timeout=self.timeout,
                follow_redirects=False,
                trust_env=False,
                limits=httpx.Limits(max_connections=500, max_keepalive_connections=100),
                cookies=http.cookiejar.CookieJar(policy=_KeepNoCookies()),
            )
        return self._client

    async def aclose(self) -> None:
        """Close the backend connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._proxy(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        request_id = accept_request_id(_header(headers, b"x-request-id"))
        try:
            path = normalize_path(scope["path"])
        except BadPath as exc:
            await _respond(send, 400, _error(f"Bad request path: {exc}"), request_id)
            logger.warning("%s %s refused: %s", scope["method"], _escaped(scope["path"]), exc)
            return
        route = match_route(self.routes, path)
        if route is None:
            await _respond(send, 404, _error("Not Found"), request_id)
            return
        base = self.backends.get(route.service)
        if base is None:
            await _respond(send, 503, _error(f"{route.service} is not running in this stack"), request_id)
            return
        url = base + urllib.parse.quote(path, safe=_PATH_SAFE)
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        request = self.client.build_request(
            scope["method"],
            url,
            headers=_forward_headers(scope, headers, request_id),
            content=_request_body(receive) if _has_body(headers) else None,
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException:
            await _respond(send, 504, _error(f"{route.service} did not answer in time"), request_id)
            logger.warning("%s %s -> %s timed out", scope["method"], path, route.service)
            return
        except httpx.HTTPError as exc:
            # A backend that is down (restarting, crashed) is an outage: 503 with Retry-After, as the contract says.
            await _respond(send, 503, _error(f"{route.service} is unavailable"), request_id, retry_after=1)
            logger.warning("%s %s -> %s unavailable: %s", scope["method"], path, route.service, exc)
            return
        try:
            out = [(k, v) for k, v in response.headers.raw if k.lower() not in _OWN_RESPONSE_HEADERS]
            if not any(k.lower() == b"x-request-id" for k, _ in out):
                out.append((b"x-request-id", request_id.encode()))
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx.HTTPError as exc:  # the backend died mid-body; all we can do is end the response
            logger.warning("%s %s -> %s broke off: %s", scope["method"], path, route.service, exc)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()
        logger.info(
            "%s %s -> %s %d %.0fms",
            scope["method"],
            path,
            route.service,
            response.status_code,
            (time.monotonic() - started) * 1000,
        )


class _KeepNoCookies(http.cookiejar.DefaultCookiePolicy):
    """The gateway is one HTTP client for every user: a Set-Cookie meant for one browser must never be kept.

    httpx keeps response cookies in the client's jar and adds them to every later request that has no Cookie
    header of its own, so without this an anonymous or Bearer-token caller became whoever signed in last.
    """

    def set_ok(self, cookie: http.cookiejar.Cookie, request: urllib.request.Request) -> bool:
        return False


def _escaped(text: str) -> str:
    """A client's text made safe for one log line: control characters shown as escapes."""
    return "".join(ch.encode("unicode_escape").decode() if unicodedata.category(ch) == "Cc" else ch for ch in text)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in headers)


def _forward_headers(scope: Scope, headers: list[tuple[bytes, bytes]], request_id: str) -> list[tuple[bytes, bytes]]:
    """End-to-end headers (Host and cookies included), plus the request id and the X-Forwarded-* family."""
    listed = {
        token.strip().lower().encode()
        for key, value in headers
        if key.lower() == b"connection"
        for token in value.decode("latin-1").split(",")
    }
    drop = _HOP_BY_HOP_BYTES | listed | {b"x-request-id", b"x-forwarded-for", b"x-real-ip"}
    drop |= {b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port"}
    out = [(k, v) for k, v in headers if k.lower() not in drop]
    client = scope.get("client")
    client_ip = client[0] if client else "unknown"
    prior = _header(headers, b"x-forwarded-for")
    server = scope.get("server")
    host = _header(headers, b"host") or (f"{server[0]}:{server[1]}" if server else "")
    port = host.rsplit(":", 1)[1] if ":" in host and not host.endswith("]") else str(server[1] if server else "")
    out += [
        (b"x-request-id", request_id.encode()),
        (b"x-forwarded-for", (f"{prior}, {client_ip}" if prior else client_ip).encode("latin-1")),
        (b"x-real-ip", client_ip.encode("latin-1")),
        (b"x-forwarded-proto", (_header(headers, b"x-forwarded-proto") or scope.get("scheme", "http")).encode()),
        (b"x-forwarded-host", (_header(headers, b"x-forwarded-host") or host).encode("latin-1")),
        (b"x-forwarded-port", (_header(headers, b"x-forwarded-port") or port).encode("latin-1")),
    ]
    return out


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    """The client's body, chunk by chunk as the server receives it."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


async def _respond(send: Send, status: int, body: bytes, request_id: str, *, retry_after: int | None = None) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_gateway(manifest: Path | str, backends: Mapping[str, str], **kwargs: Any) -> Gateway:
    """A gateway over the Ingress in `manifest`."""
    return Gateway(load_routes(manifest), backends, **kwargs)
