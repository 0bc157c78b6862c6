"""The dev gateway: Ingress path matching, header forwarding, streaming, and errors in the contract's shape."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from starlette.types import Receive, Scope, Send

from ticketing_common.limits import MAX_BODY_BYTES, RequestLimitsMiddleware
from ticketing_dev.gateway import BadPath, Gateway, Route, load_routes, match_route, normalize_path
from ticketing_dev.servers import free_port

INGRESS = Path(__file__).resolve().parents[3] / "infra" / "k8s" / "base" / "ingress.yaml"


def route(path: str, service: str, path_type: str = "Prefix") -> Route:
    return Route(path=path, path_type=path_type, service=service, port=8000)


def test_reads_every_path_of_the_clusters_ingress() -> None:
    routes = load_routes(INGRESS)

    table = {r.path: r.service for r in routes}
    assert table["/api/users"] == "auth-srv"
    assert table["/api/tickets"] == "tickets-srv"
    assert table["/api/orders"] == "orders-srv"
    assert table["/api/payments"] == "payments-srv"
    assert table["/"] == "client-srv"
    assert all(r.path_type == "Prefix" for r in routes)


@pytest.mark.parametrize(
    ("path", "service"),
    [
        ("/api/users", "auth-srv"),
        ("/api/users/", "auth-srv"),
        ("/api/users/signup", "auth-srv"),
        ("/api/tickets/8c7e/anything", "tickets-srv"),
        ("/api/orders", "orders-srv"),
        ("/api/payments", "payments-srv"),
        # Whatever no /api/ prefix claims is the web client's (it answers an unknown /api/ path with a JSON 404).
        ("/api/usersx", "client-srv"),
        ("/api/user", "client-srv"),
        ("/", "client-srv"),
        ("/tickets/8c7e", "client-srv"),
        ("/api", "client-srv"),
    ],
)
def test_matches_prefixes_element_by_element_like_kubernetes(path: str, service: str | None) -> None:
    matched = match_route(load_routes(INGRESS), path)

    assert (matched.service if matched else None) == service


def test_the_longest_matching_prefix_wins() -> None:
    routes = [route("/api", "api-srv"), route("/api/orders", "orders-srv"), route("/", "default-srv")]

    assert match_route(routes, "/api/orders/1").service == "orders-srv"  # type: ignore[union-attr]
    assert match_route(routes, "/api/ordersx").service == "api-srv"  # type: ignore[union-attr]
    assert match_route(routes, "/elsewhere").service == "default-srv"  # type: ignore[union-attr]


def test_exact_matches_only_the_whole_path_and_beats_prefix_on_a_tie() -> None:
    routes = [route("/api/orders", "prefix-srv"), route("/api/orders", "exact-srv", "Exact")]

    assert match_route(routes, "/api/orders").service == "exact-srv"  # type: ignore[union-attr]
    assert match_route(routes, "/api/orders/1").service == "prefix-srv"  # type: ignore[union-attr]


def test_a_trailing_slash_in_the_prefix_is_ignored() -> None:
    routes = [route("/foo/", "foo-srv")]

    assert match_route(routes, "/foo").service == "foo-srv"  # type: ignore[union-attr]
    assert match_route(routes, "/foo/bar").service == "foo-srv"  # type: ignore[union-attr]
    assert match_route(routes, "/foobar") is None


async def echo_backend(scope: Scope, receive: Receive, send: Send) -> None:
    """A real HTTP backend that reports what it received and streams large bodies back."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"].endswith("/echo"):
        # Read the whole upload, then stream it back in chunks (HTTP/1.1 clients send before they read).
        digest, received = hashlib.sha256(), bytearray()
        while True:
            message = await receive()
            digest.update(message.get("body", b""))
            received += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(b"content-type", b"application/octet-stream"), (b"x-sha256", digest.hexdigest().encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for start in range(0, len(received), 65536):
            await send(
                {"type": "http.response.body", "body": bytes(received[start : start + 65536]), "more_body": True}
            )
        await send({"type": "http.response.body", "body": b""})
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    report = {
        "method": scope["method"],
        "path": scope["path"],
        "query": scope["query_string"].decode(),
        "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
        "size": size,
    }
    body = json.dumps(report).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [
                (b"content-type", b"application/json"),
                (b"set-cookie", b"session=abc; Path=/; HttpOnly"),
                (b"set-cookie", b"other=1; Path=/"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def backend_url() -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(echo_backend, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    await task
    sock.close()


def gateway_client(backends: dict[str, str]) -> httpx.AsyncClient:
    gateway = Gateway(load_routes(INGRESS), backends)
    transport = httpx.ASGITransport(app=gateway, client=("10.1.2.3", 5555))
    return httpx.AsyncClient(transport=transport, base_url="http://ticketing.dev")


async def test_forwards_method_path_query_body_and_cookies_and_returns_every_set_cookie(backend_url: str) -> None:
    async with gateway_client({"auth-srv": backend_url}) as client:
        response = await client.post(
            "/api/users/signin?next=%2Fhome", json={"email": "a@b.c"}, headers={"Cookie": "session=xyz"}
        )

    report = response.json()
    headers = dict(report["headers"])
    assert response.status_code == 201
    assert report["method"] == "POST" and report["path"] == "/api/users/signin" and report["query"] == "next=%2Fhome"
    assert report["size"] == len(b'{"email":"a@b.c"}')
    assert headers["cookie"] == "session=xyz"
    assert headers["host"] == "ticketing.dev"
    assert response.headers.get_list("set-cookie") == ["session=abc; Path=/; HttpOnly", "other=1; Path=/"]


async def test_keeps_no_cookie_from_one_users_response_for_the_next_users_request(backend_url: str) -> None:
    gateway = Gateway(load_routes(INGRESS), {"auth-srv": backend_url})
    transport = httpx.ASGITransport(app=gateway, client=("10.1.2.3", 5555))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://ticketing.dev") as alice,
        httpx.AsyncClient(transport=transport, base_url="http://ticketing.dev") as anonymous,
    ):
        signed_in = await alice.post("/api/users/signin", json={"email": "alice@example.com"})
        later = await anonymous.get("/api/users/currentuser", headers={"Authorization": "Bearer bob"})

    assert "session=abc" in signed_in.headers.get_list("set-cookie")[0]
    headers = dict(later.json()["headers"])
    assert "cookie" not in headers
    assert headers["authorization"] == "Bearer bob"


async def test_sets_x_forwarded_headers_and_a_request_id_when_the_client_sent_none(backend_url: str) -> None:
    async with gateway_client({"auth-srv": backend_url}) as client:
        response = await client.get("/api/users/currentuser", headers={"X-Forwarded-For": "192.0.2.1"})

    headers = dict(response.json()["headers"])
    assert headers["x-forwarded-for"] == "192.0.2.1, 10.1.2.3"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "ticketing.dev"
    assert len(headers["x-request-id"]) == 32
    assert response.headers["x-request-id"] == headers["x-request-id"]


async def test_passes_the_clients_request_id_through(backend_url: str) -> None:
    async with gateway_client({"auth-srv": backend_url}) as client:
        response = await client.get("/api/users/currentuser", headers={"X-Request-ID": "abc-123"})

    assert dict(response.json()["headers"])["x-request-id"] == "abc-123"
    assert response.headers["x-request-id"] == "abc-123"


async def test_streams_a_large_body_both_ways(backend_url: str) -> None:
    payload = bytes(range(256)) * 40_000  # 10 MB

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 65536):
            yield payload[start : start + 65536]

    gateway = Gateway(load_routes(INGRESS), {"tickets-srv": backend_url})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(gateway, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(trust_env=False) as client:
            response = await client.post(f"http://127.0.0.1:{port}/api/tickets/echo", content=chunks())
    finally:
        server.should_exit = True
        await task

    assert response.status_code == 200
    assert response.headers["x-sha256"] == hashlib.sha256(payload).hexdigest()
    assert response.content == payload


async def test_answers_503_with_retry_after_in_the_error_shape_when_the_backend_is_down() -> None:
    async with gateway_client({"orders-srv": f"http://127.0.0.1:{free_port()}"}) as client:
        response = await client.get("/api/orders")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"errors": [{"message": "orders-srv is unavailable"}]}
    assert response.headers["x-request-id"]


async def test_answers_503_when_the_stack_runs_no_such_backend() -> None:
    async with gateway_client({}) as client:
        response = await client.get("/api/payments")

    assert response.status_code == 503
    assert response.json() == {"errors": [{"message": "payments-srv is not running in this stack"}]}


async def test_answers_an_unknown_route_with_404_not_found() -> None:
    gateway = Gateway([route("/api/users", "auth-srv")], {})
    transport = httpx.ASGITransport(app=gateway, client=("10.1.2.3", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://ticketing.dev") as client:
        response = await client.get("/nowhere")

    assert response.status_code == 404
    assert response.json() == {"errors": [{"message": "Not Found"}]}


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/api/users/signin", "/api/users/signin"),
        ("/api/users/", "/api/users/"),
        ("/api//users///signin", "/api/users/signin"),
        ("/api/users/./signin", "/api/users/signin"),
        ("/api/users/x/../signin", "/api/users/signin"),
        ("/api/users/../../metrics", "/metrics"),
        ("/api/users/..", "/api/"),
        ("/", "/"),
    ],
)
def test_normalises_the_path_as_nginx_does(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal


@pytest.mark.parametrize("raw", ["/..", "/api/../../x", "/api/users/a\nforged", "/a\x00b", "/a\x1bb", "relative"])
def test_refuses_a_path_above_the_root_or_with_control_characters(raw: str) -> None:
    with pytest.raises(BadPath):
        normalize_path(raw)


@contextlib.asynccontextmanager
async def serving(gateway: Any) -> AsyncIterator[int]:
    """The gateway on a real uvicorn, as `make dev` runs it."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(gateway, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def raw_get(port: int, target: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """GET with the request target sent byte for byte, as `curl --path-as-is` does (httpx would normalise it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: ticketing.dev\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = [(k.strip().lower(), v.strip()) for k, v in (line.split(":", 1) for line in lines)]
    if ("transfer-encoding", "chunked") in headers:
        body = dechunk(body)
    return int(status_line.split()[1]), headers, body


def dechunk(body: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return bytes(out)
        out += body[:size]
        body = body[size + 2 :]


@pytest.mark.parametrize("target", ["/api/users/../../metrics", "/api/users/%2e%2e/%2E%2E/metrics"])
async def test_a_dot_dot_path_never_reaches_a_services_internal_routes(backend_url: str, target: str) -> None:
    async with serving(Gateway(load_routes(INGRESS), {"auth-srv": backend_url})) as port:
        status, _, body = await raw_get(port, target)

    # Normalised to /metrics, it is not auth's: the Ingress sends it where it sends "/" (the web client, absent here).
    assert status in (404, 503), body
    assert json.loads(body)["errors"][0]["message"] in ("Not Found", "client-srv is not running in this stack")


async def test_forwards_the_normalised_path_it_matched(backend_url: str) -> None:
    async with serving(Gateway(load_routes(INGRESS), {"auth-srv": backend_url})) as port:
        status, _, body = await raw_get(port, "/api/users/x/..//signin/%2e?next=1")

    assert status == 201
    assert json.loads(body)["path"] == "/api/users/signin/"


async def test_a_newline_in_the_path_is_refused_and_cannot_forge_a_log_line(
    backend_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ticketing.gateway")
    async with serving(Gateway(load_routes(INGRESS), {"auth-srv": backend_url})) as port:
        status, _, body = await raw_get(port, "/api/users/x%0aGET%20/api/orders%20-%3E%20orders-srv%20200")

    assert status == 400
    assert json.loads(body)["errors"][0]["message"].startswith("Bad request path")
    assert caplog.records, "the refusal is logged"
    assert all("\n" not in record.getMessage() for record in caplog.records)


async def test_every_response_has_one_date_and_one_server_header(backend_url: str) -> None:
    async with serving(Gateway(load_routes(INGRESS), {"auth-srv": backend_url})) as port:
        _, headers, _ = await raw_get(port, "/api/users/currentuser")

    names = [name for name, _ in headers]
    assert names.count("date") == 1
    assert names.count("server") == 1


async def test_the_dev_gateway_refuses_a_body_past_the_ingress_limit(backend_url: str) -> None:
    gateway = RequestLimitsMiddleware(Gateway(load_routes(INGRESS), {"tickets-srv": backend_url}))
    async with serving(gateway) as port, httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(f"http://127.0.0.1:{port}/api/tickets/echo", content=b"x" * (2 * 1024 * 1024))

    assert response.status_code == 413
    assert response.json()["errors"][0]["message"].startswith("Request body is too large")


def test_the_ingress_carries_the_same_body_limit() -> None:
    manifest = yaml.safe_load(INGRESS.read_text())
    limit = manifest["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert limit == f"{MAX_BODY_BYTES // (1024 * 1024)}m"
