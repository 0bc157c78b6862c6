"""Size limits: oversized headers and bodies are refused in the contract's shape before any route reads them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from ticketing_common.errors import install_error_handlers
from ticketing_common.limits import MAX_BODY_BYTES, RequestLimitsMiddleware
from ticketing_common.requestid import RequestIdMiddleware

READ: list[int] = []


class Body(BaseModel):
    title: str


def build_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestLimitsMiddleware)
    app.add_middleware(RequestIdMiddleware)

    @app.post("/items")
    async def create(body: Body) -> dict[str, int]:
        READ.append(len(body.title))
        return {"length": len(body.title)}

    return app


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """The app on a real uvicorn with its default parser, as the images run it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    READ.clear()
    async with serving(build_app()) as url:
        yield url


async def test_a_body_within_the_limit_is_served(base_url: str) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(f"{base_url}/items", json={"title": "x" * 1000})

    assert response.status_code == 200
    assert response.json() == {"length": 1000}


async def test_a_declared_oversized_body_is_refused_with_413_before_it_is_read(base_url: str) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(f"{base_url}/items", json={"title": "x" * (MAX_BODY_BYTES + 1)})

    assert response.status_code == 413
    assert response.json() == {"errors": [{"message": f"Request body is too large (at most {MAX_BODY_BYTES} bytes)"}]}
    assert response.headers["x-request-id"]
    assert READ == []


async def test_a_chunked_body_that_runs_past_the_limit_is_refused_with_413(base_url: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"title": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(
            f"{base_url}/items", content=chunks(), headers={"content-type": "application/json"}
        )

    assert response.status_code == 413
    assert response.json()["errors"][0]["message"].startswith("Request body is too large")
    assert READ == []


async def test_oversized_headers_are_refused_with_431(base_url: str) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(
            f"{base_url}/items", json={"title": "x"}, headers={"Authorization": "Bearer " + "a" * 1_000_000}
        )

    assert response.status_code == 431
    assert response.json() == {"errors": [{"message": "Request headers are too large"}]}
    assert READ == []
