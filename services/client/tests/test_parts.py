"""The client's parts that need no stack: settings, the CSRF check, error sentences, prices and redirects; and its
pages when the API cannot be reached at all."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import ValidationError

from ticketing_client.api import ApiResponse
from ticketing_client.app import create_app
from ticketing_client.csrf import same_origin
from ticketing_client.pages import format_price, safe_next, seconds_left
from ticketing_client.service import CATCHING_UP, UNAVAILABLE, Problems
from ticketing_client.settings import Settings

BACKENDS = {"/api/users": "http://auth-srv:8000", "/api/tickets": "http://tickets-srv:8000/"}


def test_an_api_path_goes_to_its_backend_else_to_the_api_url() -> None:
    settings = Settings(api_url="http://gateway:8080/", api_backends=BACKENDS)

    assert settings.base_url_for("/api/users/signin") == "http://auth-srv:8000"
    assert settings.base_url_for("/api/tickets") == "http://tickets-srv:8000"
    assert settings.base_url_for("/api/ticketsx") == "http://gateway:8080"
    assert settings.base_url_for("/api/orders/1") == "http://gateway:8080"


def test_settings_refuse_a_client_with_no_api_or_stripe_without_its_key() -> None:
    with pytest.raises(ValidationError, match="API_URL or API_BACKENDS"):
        Settings()
    with pytest.raises(ValidationError, match="STRIPE_PUBLISHABLE_KEY"):
        Settings(api_url="http://gateway", payment_provider="stripe")
    with pytest.raises(ValidationError, match="must start with /api/"):
        Settings(api_backends={"/users": "http://auth-srv:8000"})


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"host": "ticketing.dev", "origin": "https://ticketing.dev"}, True),
        ({"host": "ticketing.dev", "referer": "https://ticketing.dev/auth/signin"}, True),
        ({"host": "ticketing.dev", "origin": "https://evil.example"}, False),
        ({"host": "ticketing.dev", "origin": "null", "referer": "https://evil.example/"}, False),
        ({"host": "ticketing.dev", "origin": "https://ticketing.dev.evil.example"}, False),
        ({"host": "ticketing.dev"}, False),
    ],
)
def test_only_a_form_from_this_site_passes_the_csrf_check(headers: dict[str, str], allowed: bool) -> None:
    assert same_origin(headers) is allowed


def test_api_errors_become_sentences_beside_their_fields() -> None:
    body = {"errors": [{"message": "Email must be valid", "field": "email"}, {"message": "Ticket is already reserved"}]}

    problems = Problems.of(ApiResponse(400, body), ("email", "password"))

    assert problems.fields == {"email": "Email must be valid."}
    assert problems.general == ["Ticket is already reserved."]


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (500, {"errors": [{"message": "Something went wrong"}]}, "Something went wrong on our side. Please try again."),
        (502, "<html>bad gateway</html>", "Something went wrong on our side. Please try again."),
        (503, {"errors": [{"message": "Order not yet known"}]}, CATCHING_UP),
        (401, {"errors": [{"message": "Not authorized"}]}, "You are not allowed to do that."),
        (404, None, "We could not find that."),
        (409, {"unexpected": "shape"}, "Someone else changed this at the same moment. Please try again."),
    ],
)
def test_every_kind_of_api_failure_reads_as_a_sentence(status: int, body: object, expected: str) -> None:
    assert Problems.of(ApiResponse(status, body)).general == [expected]


def test_too_many_attempts_says_how_long_to_wait() -> None:
    problems = Problems.of(ApiResponse(429, {"errors": [{"message": "Too many attempts"}]}, retry_after=30))

    assert problems.general == ["Too many attempts. Please try again in 30 seconds."]


def test_prices_show_two_decimals_and_the_countdown_never_goes_negative() -> None:
    assert format_price(20) == "$20.00"
    assert format_price(7.5) == "$7.50"
    assert format_price("1000000") == "$1,000,000.00"
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert seconds_left("2030-01-01T12:00:30.200Z", now) == 31
    assert seconds_left("2030-01-01T11:59:00Z", now) == 0


def test_only_a_local_path_is_a_place_to_return_to() -> None:
    assert safe_next("/tickets/1") == "/tickets/1"
    for unsafe in ("https://evil.example/", "//evil.example", "/\\evil.example", "", None):
        assert safe_next(unsafe) == "/"


async def test_pages_say_the_marketplace_is_unavailable_when_the_api_cannot_be_reached() -> None:
    # Port 9 (discard) on loopback: nothing listens, so every call fails to connect, as with a backend down.
    app = create_app(Settings(api_url="http://127.0.0.1:9", api_timeout_seconds=2))
    origin = {"Origin": "http://client.test", "Cookie": "session=abc"}
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://client.test") as client,
    ):
        home = await client.get("/")
        signin = await client.post("/auth/signin", data={"email": "a@b.co", "password": "x" * 8}, headers=origin)
        order = await client.get("/orders/0b7c7a04-86c5-4c1c-9a3e-3b9c2e7c1d11", headers=origin)

    for page in (home, signin):
        assert page.status_code == 503
        assert UNAVAILABLE in page.text
        assert "Traceback" not in page.text
    # Signed in or not cannot be told either: the order page asks to sign in first.
    assert order.status_code == 303
