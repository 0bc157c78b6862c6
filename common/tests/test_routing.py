"""Request bodies as the wire means them: exact decimals, strict JSON, and only text a database can store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from ticketing_common.errors import install_error_handlers
from ticketing_common.routing import UNSTORABLE_MESSAGE, ServiceRoute, parse_json_body
from ticketing_common.validation import Price

SEEN: list[Any] = []


class Body(BaseModel):
    title: str
    price: Price
    tags: list[str] = []


def build_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    router = APIRouter(route_class=ServiceRoute)

    @router.post("/items")
    async def create(body: Body) -> dict[str, str]:
        SEEN.append(body)
        return {"price": str(body.price)}

    app.include_router(router)
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    SEEN.clear()
    transport = httpx.ASGITransport(app=build_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


async def post(client: httpx.AsyncClient, raw: str) -> httpx.Response:
    return await client.post(
        "/items", content=raw.encode("utf-8", "surrogatepass"), headers={"content-type": "application/json"}
    )


async def test_a_good_body_is_read_exactly(client: httpx.AsyncClient) -> None:
    response = await post(client, '{"title": "Concert", "price": 10.10}')
    assert response.status_code == 200
    assert response.json() == {"price": "10.10"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        # As a float this is 1000000.0, which passed the limit; as the number it is, it is over it.
        ('{"title": "x", "price": 1000000.0000000000000001}', "Price must be at most 1,000,000"),
        ('{"title": "x", "price": 10.0000000000000001}', "Price must have at most 2 decimals"),
    ],
)
async def test_a_price_is_checked_as_the_decimal_it_was_written_as(
    client: httpx.AsyncClient, raw: str, message: str
) -> None:
    response = await post(client, raw)
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": message, "field": "price"}]}
    assert SEEN == []


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"title": "a\\u0000b", "price": 1}', "title"),  # Postgres text cannot hold NUL
        ('{"title": "\\ud800", "price": 1}', "title"),  # a lone surrogate: no UTF-8 for it
        ('{"title": "x", "price": 1, "tags": ["ok", "\\udfff"]}', "tags"),
        ('{"title": "x", "price": 1, "a\\u0000": 1}', None),
    ],
)
async def test_text_no_database_can_store_is_a_400_naming_the_field(
    client: httpx.AsyncClient, raw: str, field: str | None
) -> None:
    response = await post(client, raw)
    assert response.status_code == 400
    entry: dict[str, str] = {"message": UNSTORABLE_MESSAGE}
    if field:
        entry["field"] = field
    assert response.json() == {"errors": [entry]}
    assert SEEN == []


@pytest.mark.parametrize(
    "raw",
    [
        '{"title": "x", "price": ' + "9" * 5000 + "}",
        "[" * 100_000 + "]" * 100_000,
    ],
)
async def test_what_is_not_json_is_the_invalid_json_error(client: httpx.AsyncClient, raw: str) -> None:
    response = await post(client, raw)
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Request body must be valid JSON"}]}


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_a_non_finite_constant_reaches_the_validator_as_a_decimal(
    client: httpx.AsyncClient, constant: str
) -> None:
    response = await post(client, f'{{"title": "x", "price": {constant}}}')
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Price must be greater than 0", "field": "price"}]}


async def test_invalid_utf8_is_the_invalid_json_error(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/items", content=b'{"title": "\xff", "price": 1}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Request body must be valid JSON"}]}


def test_paired_surrogates_are_ordinary_text() -> None:
    assert parse_json_body(b'{"t": "\\ud83c\\udfab", "p": 1.5}') == {"t": "\N{TICKET}", "p": Decimal("1.5")}


@pytest.mark.parametrize("key", ["\\u00b0v", "ticket_id", "a b", "x" * 100])
async def test_an_unstorable_value_under_a_key_that_is_no_field_name_names_no_field(
    client: httpx.AsyncClient, key: str
) -> None:
    # Found by the fuzz suite's error-shape check: the key is the client's text, and was echoed as `field`.
    response = await post(client, f'{{"{key}": "\\u0000", "title": "x", "price": 1}}')
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Text must not contain NUL or unpaired surrogate characters"}]}
