"""The contract's error shape for every kind of failure, on a bare app with the handlers installed."""

from __future__ import annotations

from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI, Query
from pydantic import BaseModel, BeforeValidator

from ticketing_common.errors import Conflict, NotAuthorized, install_error_handlers
from ticketing_common.requestid import RequestIdMiddleware
from ticketing_common.uow import Database, UnitOfWorkDep
from ticketing_common.validation import Price, field_error, parse_id


def _title(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise field_error("title", "Title is required")
    return value.strip()


class Body(BaseModel):
    title: Annotated[str, BeforeValidator(_title)]
    price: Price
    ticket_id: str | None = None


def build_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app, {"ticketId": "TicketId must be provided"})
    app.add_middleware(RequestIdMiddleware)

    @app.post("/items")
    async def create(body: Body) -> dict[str, object]:
        return body.model_dump(mode="json", include={"price"})

    @app.get("/items/{item_id}")
    async def read(item_id: str, limit: Annotated[int, Query(ge=1, le=100)] = 100) -> dict[str, str]:
        return {"id": str(parse_id(item_id))}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    @app.get("/denied")
    async def denied() -> None:
        raise NotAuthorized()

    @app.get("/conflict")
    async def conflict() -> None:
        raise Conflict()

    return app


@pytest.fixture
async def client():
    transport = httpx.ASGITransport(app=build_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


@pytest.mark.parametrize(
    ("price", "message"),
    [
        (0, "Price must be greater than 0"),
        (-1, "Price must be greater than 0"),
        ("10", "Price must be greater than 0"),
        (True, "Price must be greater than 0"),
        (None, "Price must be greater than 0"),
        (1.234, "Price must have at most 2 decimals"),
        (1000000.01, "Price must be at most 1,000,000"),
    ],
)
async def test_price_rules(client: httpx.AsyncClient, price: object, message: str) -> None:
    response = await client.post("/items", json={"title": "t", "price": price})
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": message, "field": "price"}]}


@pytest.mark.parametrize("raw", [b'{"title": "t", "price": NaN}', b'{"title": "t", "price": Infinity}'])
async def test_nan_and_infinity_are_not_prices(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post("/items", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "price"


async def test_a_good_price_is_exact(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"title": "t", "price": 19.99})
    assert response.status_code == 200
    assert response.json() == {"price": 19.99}


async def test_every_bad_field_is_reported(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"title": " ", "price": 0})
    assert response.status_code == 400
    assert response.json() == {
        "errors": [
            {"message": "Title is required", "field": "title"},
            {"message": "Price must be greater than 0", "field": "price"},
        ]
    }


async def test_missing_fields_use_their_configured_message(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={})
    assert response.status_code == 400
    assert response.json() == {
        "errors": [
            {"message": "Title is required", "field": "title"},
            {"message": "Price is required", "field": "price"},
        ]
    }


async def test_a_body_that_is_not_an_object_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json=[1, 2])
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Request body must be a JSON object"}]}


async def test_malformed_json_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Request body must be valid JSON"}]}


async def test_a_malformed_id_is_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get("/items/not-a-uuid")
    assert response.status_code == 404
    assert response.json() == {"errors": [{"message": "Not Found"}]}


async def test_query_errors_name_the_parameter(client: httpx.AsyncClient) -> None:
    response = await client.get("/items/7f1c5f36-3f0b-4a4f-9b7e-6d1f2f3a4b5c?limit=0")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "limit"


async def test_unknown_errors_are_500_without_details(client: httpx.AsyncClient, caplog) -> None:
    response = await client.get("/boom", headers={"X-Request-ID": "trace-me"})
    assert response.status_code == 500
    assert response.json() == {"errors": [{"message": "Something went wrong"}]}
    assert "secret internals" not in response.text
    assert response.headers["x-request-id"] == "trace-me"
    assert any("secret internals" in (r.exc_text or str(r.exc_info)) for r in caplog.records)


async def test_app_errors_keep_their_status(client: httpx.AsyncClient) -> None:
    assert (await client.get("/denied")).json() == {"errors": [{"message": "Not authorized"}]}
    assert (await client.get("/denied")).status_code == 401
    assert (await client.get("/conflict")).status_code == 409


async def test_unknown_routes_and_methods_use_the_shape(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.json() == {"errors": [{"message": "Not Found"}]}
    wrong_method = await client.delete("/items")
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"errors": [{"message": "Method Not Allowed"}]}


async def test_an_unsafe_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    response = await client.get("/denied", headers={"X-Request-ID": "bad id\twith spaces"})
    assert response.headers["x-request-id"] != "bad id\twith spaces"


class FailingSession:
    """Stands in for the database only at commit time, which a real Postgres cannot be made to fail on cue."""

    async def commit(self) -> None:
        raise RuntimeError("commit failed")

    async def rollback(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> FailingSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


async def test_a_failed_commit_is_never_reported_as_success() -> None:
    app = build_app()
    app.state.database = Database(engine=None, sessionmaker=FailingSession, pool=None)  # type: ignore[arg-type]

    @app.post("/write", status_code=201)
    async def write(uow: UnitOfWorkDep) -> dict[str, str]:
        assert uow.session is not None  # the write opens the session whose commit fails
        return {"status": "written"}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/write")
    assert response.status_code == 500
    assert response.json() == {"errors": [{"message": "Something went wrong"}]}
