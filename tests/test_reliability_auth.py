"""Sessions across every service: bad tokens are anonymous, nobody reaches another user's things, passwords stay secret.

All the services run in-process on the test Postgres and NATS with the shared test JWT key. A token that is forged,
alg=none, expired, signed with another key (or otherwise not what auth issues) must leave the caller anonymous on
every protected route, in the cookie and in a Bearer header alike, and change nothing. A signed-in user must get 401
or 404 for another user's ticket edit, order and payment. And a password, or its Argon2 hash, must never appear in a
response, a log line (captured at DEBUG) or an event, through sign-up, sign-in and a whole purchase.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import sys
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from jwt.warnings import InsecureKeyLengthWarning
from sqlalchemy import func, select

from ticketing_auth import app as auth_app
from ticketing_auth import settings as auth_settings
from ticketing_auth.models import User
from ticketing_common.auth import SESSION_COOKIE, create_token
from ticketing_common.db import OutboxEvent
from ticketing_expiration import app as expiration_app
from ticketing_expiration import settings as expiration_settings
from ticketing_orders import app as orders_app
from ticketing_orders import models as orders_models
from ticketing_orders import settings as orders_settings
from ticketing_payments import app as payments_app
from ticketing_payments import settings as payments_settings
from ticketing_payments.models import Order as PaymentsOrder
from ticketing_payments.providers import FakeProvider
from ticketing_testing import TEST_JWT_KEY, EventCapture, TestUser, eventually, make_user
from ticketing_testing.plugin import RunningService, ServiceStarter
from ticketing_tickets import app as tickets_app
from ticketing_tickets import settings as tickets_settings

NOT_AUTHORIZED = {"errors": [{"message": "Not authorized"}]}
TIMEOUT = 20.0


@dataclass
class Suite:
    """Every service, running; and every response the test received, for the secret scan."""

    auth: RunningService
    tickets: RunningService
    orders: RunningService
    payments: RunningService
    expiration: RunningService
    responses: list[httpx.Response] = field(default_factory=list)

    @property
    def all(self) -> list[RunningService]:
        return [self.auth, self.tickets, self.orders, self.payments, self.expiration]

    async def call(self, service: RunningService, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = await service.client.request(method, url, **kwargs)
        self.responses.append(response)
        return response


async def start_suite(start_service: ServiceStarter, **overrides: Any) -> Suite:
    return Suite(
        auth=await start_service(auth_app.create_app, auth_settings.Settings, "ticketing_auth", **overrides),
        tickets=await start_service(
            tickets_app.create_app, tickets_settings.Settings, "ticketing_tickets", **overrides
        ),
        orders=await start_service(orders_app.create_app, orders_settings.Settings, "ticketing_orders", **overrides),
        payments=await start_service(
            payments_app.create_app, payments_settings.Settings, "ticketing_payments", **overrides
        ),
        expiration=await start_service(
            expiration_app.create_app, expiration_settings.Settings, "ticketing_expiration", **overrides
        ),
    )


@pytest.fixture
async def suite(start_service: ServiceStarter) -> Suite:
    return await start_suite(start_service)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _hs512(claims: dict[str, Any]) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)  # the test key is short for SHA-512
        return jwt.encode(claims, TEST_JWT_KEY, algorithm="HS512")


def bad_tokens(victim: TestUser) -> dict[str, str]:
    """Tokens that must not sign anyone in, most of them naming the victim as their subject."""
    now = datetime.now(UTC)
    claims = {"sub": str(victim.id), "email": victim.email, "iat": int(now.timestamp())}
    valid_for_an_hour = {**claims, "exp": int((now + timedelta(hours=1)).timestamp())}
    header, _, signature = victim.token.split(".")
    other = make_user()
    return {
        # The victim's real signature on a payload claiming someone else.
        "forged payload": f"{header}.{_b64({**valid_for_an_hour, 'sub': str(other.id)})}.{signature}",
        # Another user's valid payload under the victim's signature.
        "swapped signature": f"{other.token.rsplit('.', 1)[0]}.{signature}",
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(valid_for_an_hour)}.",
        "alg none, signature kept": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(valid_for_an_hour)}.{signature}",
        "expired": create_token(
            user_id=victim.id, email=victim.email, key=TEST_JWT_KEY, ttl_seconds=60, now=now - timedelta(hours=2)
        ),
        "wrong key": jwt.encode(valid_for_an_hour, "another-key-" + secrets.token_hex(16), algorithm="HS256"),
        "HS512 with the right key": _hs512(valid_for_an_hour),
        "no exp": jwt.encode(claims, TEST_JWT_KEY, algorithm="HS256"),
        "subject not an id": jwt.encode({**valid_for_an_hour, "sub": "admin"}, TEST_JWT_KEY, algorithm="HS256"),
        "garbage": "not.a.jwt",
        "empty segments": "..",
    }


def carried(token: str) -> dict[str, dict[str, str]]:
    return {"cookie": {"Cookie": f"{SESSION_COOKIE}={token}"}, "bearer": {"Authorization": f"Bearer {token}"}}


async def outbox_total(services: Iterable[RunningService]) -> int:
    total = 0
    for service in services:
        async with service.sessionmaker() as session:
            total += int(await session.scalar(select(func.count()).select_from(OutboxEvent)) or 0)
    return total


async def create_ticket(suite: Suite, seller: TestUser, price: float = 30) -> dict[str, Any]:
    response = await suite.call(
        suite.tickets, "POST", "/api/tickets", json={"title": "Opera", "price": price}, headers=seller.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def place_order(suite: Suite, buyer_headers: dict[str, str], ticket_id: str) -> dict[str, Any]:
    """Order a ticket once orders has heard of it over the broker."""

    async def known() -> bool:
        async with suite.orders.sessionmaker() as session:
            return await session.get(orders_models.Ticket, uuid.UUID(ticket_id)) is not None

    await eventually(known, timeout=TIMEOUT)
    response = await suite.call(
        suite.orders, "POST", "/api/orders", json={"ticketId": ticket_id}, headers=buyer_headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def known_to_payments(suite: Suite, order_id: str) -> None:
    """Wait until payments has the order from order.created (before that a payment is 404 for the wrong reason)."""

    async def known() -> bool:
        async with suite.payments.sessionmaker() as session:
            return await session.get(PaymentsOrder, uuid.UUID(order_id)) is not None

    await eventually(known, timeout=TIMEOUT)


async def test_bad_tokens_are_anonymous_on_every_protected_route_and_change_nothing(suite: Suite) -> None:
    seller, buyer = make_user(), make_user()
    ticket = await create_ticket(suite, seller)
    order = await place_order(suite, buyer.headers, ticket["id"])
    provider = suite.payments.app.state.payment_provider
    assert isinstance(provider, FakeProvider)
    await eventually(lambda: _reserved(suite, ticket["id"], order["id"]), timeout=TIMEOUT)
    await known_to_payments(suite, order["id"])
    published_before = await outbox_total(suite.all)

    checked = 0
    for victim, tokens in ((seller, bad_tokens(seller)), (buyer, bad_tokens(buyer))):
        for name, token in tokens.items():
            for how, headers in carried(token).items():
                routes = [
                    (suite.tickets, "POST", "/api/tickets", {"title": "Forged", "price": 1}),
                    (suite.tickets, "PUT", f"/api/tickets/{ticket['id']}", {"title": "Forged", "price": 1}),
                    (suite.orders, "POST", "/api/orders", {"ticketId": ticket["id"]}),
                    (suite.orders, "GET", "/api/orders", None),
                    (suite.orders, "GET", f"/api/orders/{order['id']}", None),
                    (suite.orders, "DELETE", f"/api/orders/{order['id']}", None),
                    (suite.payments, "POST", "/api/payments", {"token": "tok_visa", "orderId": order["id"]}),
                ]
                for service, method, url, body in routes:
                    response = await suite.call(service, method, url, json=body, headers=headers)
                    where = f"{name} ({how}, victim {victim.email}): {method} {url}"
                    assert response.status_code in (401, 404), f"{where} -> {response.status_code} {response.text}"
                    assert response.json()["errors"], where
                    checked += 1
                current = await suite.call(suite.auth, "GET", "/api/users/currentuser", headers=headers)
                assert current.json() == {"currentUser": None}, f"{name} ({how})"
                checked += 1

    # Nothing any of those requests tried happened.
    shown = (await suite.call(suite.tickets, "GET", f"/api/tickets/{ticket['id']}")).json()
    assert (shown["title"], shown["version"], shown["orderId"]) == ("Opera", 1, order["id"])
    mine = await suite.call(suite.orders, "GET", f"/api/orders/{order['id']}", headers=buyer.headers)
    assert mine.json()["status"] == "created"
    assert provider.charges == []
    assert await outbox_total(suite.all) == published_before
    print(f"\nauth: {checked} requests with {len(bad_tokens(seller))} kinds of bad token, each in cookie and bearer")


async def _reserved(suite: Suite, ticket_id: str, order_id: str) -> bool:
    shown = (await suite.tickets.client.get(f"/api/tickets/{ticket_id}")).json()
    return shown["orderId"] == order_id


async def test_a_signed_in_user_cannot_read_or_change_another_users_ticket_order_or_payment(suite: Suite) -> None:
    seller, buyer, intruder = make_user(), make_user(), make_user()
    ticket = await create_ticket(suite, seller)
    order = await place_order(suite, buyer.headers, ticket["id"])
    await eventually(lambda: _reserved(suite, ticket["id"], order["id"]), timeout=TIMEOUT)
    provider = suite.payments.app.state.payment_provider
    assert isinstance(provider, FakeProvider)

    await known_to_payments(suite, order["id"])
    published_before = await outbox_total(suite.all)
    attempts = [
        (suite.tickets, "PUT", f"/api/tickets/{ticket['id']}", {"title": "Mine now", "price": 1}),
        (suite.orders, "GET", f"/api/orders/{order['id']}", None),
        (suite.orders, "DELETE", f"/api/orders/{order['id']}", None),
        (suite.payments, "POST", "/api/payments", {"token": "tok_visa", "orderId": order["id"]}),
    ]
    for someone_else in (intruder, seller):
        for service, method, url, body in attempts:
            if someone_else is seller and url.startswith("/api/tickets"):
                continue  # the seller owns the ticket
            response = await suite.call(service, method, url, json=body, headers=someone_else.headers)
            assert response.status_code in (401, 404), f"{method} {url}: {response.status_code} {response.text}"
            if response.status_code == 401:
                assert response.json() == NOT_AUTHORIZED

        listed = await suite.call(suite.orders, "GET", "/api/orders", headers=someone_else.headers)
        assert listed.status_code == 200
        assert order["id"] not in {o["id"] for o in listed.json()}

    shown = (await suite.call(suite.tickets, "GET", f"/api/tickets/{ticket['id']}")).json()
    assert (shown["title"], shown["price"]) == ("Opera", 30)
    mine = await suite.call(suite.orders, "GET", f"/api/orders/{order['id']}", headers=buyer.headers)
    assert mine.json()["status"] == "created"
    assert provider.charges == []
    assert await outbox_total(suite.all) == published_before

    # The owner still can: the refusals above were about who asked, not about the order.
    paid = await suite.call(
        suite.payments,
        "POST",
        "/api/payments",
        json={"token": "tok_visa", "orderId": order["id"]},
        headers=buyer.headers,
    )
    assert paid.status_code == 201, paid.text


@dataclass
class Secrets:
    """What must never leak: the password and what auth stored for it."""

    password: str
    stored_hash: str

    def needles(self) -> dict[str, str]:
        # The hash's last field is the digest itself: catch it even when the $argon2id$... prefix was cut off.
        return {"password": self.password, "hash": self.stored_hash, "digest": self.stored_hash.rsplit("$", 1)[-1]}

    def find_in(self, haystack: str) -> list[str]:
        return [name for name, needle in self.needles().items() if needle in haystack]


def _response_text(response: httpx.Response) -> str:
    head = f"{response.request.method} {response.request.url} {response.status_code}\n"
    return head + "\n".join(f"{k}: {v}" for k, v in response.headers.items()) + "\n" + response.text


def _record_text(record: logging.LogRecord) -> str:
    parts = [record.getMessage(), repr(record.args), repr(getattr(record, "__dict__", {}))]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


async def test_no_response_log_line_or_event_ever_carries_a_password_or_its_hash(
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    start_service: ServiceStarter,
    events: EventCapture,
) -> None:
    caplog.set_level(logging.DEBUG)
    suite = await start_suite(start_service, log_level="DEBUG")
    try:
        await _run_flows_and_scan(suite, events, caplog, capfd)
    finally:
        # The services' JSON log handler writes to the stdout capfd installed, which closes before the services
        # stop; point it back at the real stdout so their shutdown lines have somewhere to go.
        for handler in logging.getLogger().handlers:
            if getattr(handler, "_ticketing", False) and isinstance(handler, logging.StreamHandler):
                handler.setStream(sys.__stdout__)


async def _run_flows_and_scan(
    suite: Suite, events: EventCapture, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    password = f"Zebra-{secrets.token_hex(8)}-Quartz!"
    email = f"Secret.Keeper+{secrets.token_hex(4)}@Example.com"

    signed_up = await suite.call(suite.auth, "POST", "/api/users/signup", json={"email": email, "password": password})
    assert signed_up.status_code == 201, signed_up.text
    async with suite.auth.sessionmaker() as session:
        user = (await session.execute(select(User).where(User.email == email.lower()))).scalar_one()
    leaks = Secrets(password, user.password_hash)
    assert leaks.stored_hash.startswith("$argon2id$")
    session_cookie = signed_up.cookies[SESSION_COOKIE]
    buyer_headers = {"Cookie": f"{SESSION_COOKIE}={session_cookie}"}

    # Every way the password travels in: sign-ups that fail, sign-ins right and wrong, malformed bodies.
    auth_calls = [
        ("/api/users/signup", {"email": email, "password": password}),  # Email in use
        ("/api/users/signup", {"email": "not-an-email", "password": password}),
        ("/api/users/signup", {"email": f"x{email}", "password": password * 10}),  # too long
        ("/api/users/signin", {"email": email, "password": password}),
        ("/api/users/signin", {"email": email, "password": password + "x"}),
        ("/api/users/signin", {"email": f"nobody-{email}", "password": password}),
        ("/api/users/signin", {"email": email, "password": [password]}),
    ]
    for url, body in auth_calls:
        response = await suite.call(suite.auth, "POST", url, json=body)
        assert response.status_code in (200, 400), f"{url} {body}: {response.status_code} {response.text}"
    broken = await suite.call(
        suite.auth,
        "POST",
        "/api/users/signin",
        content=f'{{"email": "{email}", "password": "{password}"'.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert broken.status_code == 400
    bearer = await suite.call(suite.auth, "GET", "/api/users/currentuser", headers=buyer_headers)
    assert bearer.json()["currentUser"]["email"] == email.lower()

    # A whole purchase with auth's own session cookie: every service logs and publishes on the way.
    seller = make_user()
    ticket = await create_ticket(suite, seller, price=55)
    order = await place_order(suite, buyer_headers, ticket["id"])
    await known_to_payments(suite, order["id"])
    paid = await suite.call(
        suite.payments,
        "POST",
        "/api/payments",
        json={"token": "tok_visa", "orderId": order["id"]},
        headers=buyer_headers,
    )
    assert paid.status_code == 201, paid.text

    async def completed() -> bool:
        shown = await suite.call(suite.orders, "GET", f"/api/orders/{order['id']}", headers=buyer_headers)
        return shown.json()["status"] == "complete"

    await eventually(completed, timeout=TIMEOUT)
    await events.wait_for("ticket.updated", 1, timeout=TIMEOUT)
    signed_out = await suite.call(suite.auth, "POST", "/api/users/signout", headers=buyer_headers)
    assert signed_out.status_code == 200

    found: dict[str, list[str]] = {}
    for response in suite.responses:
        if hits := leaks.find_in(_response_text(response)):
            found[f"response {response.request.method} {response.request.url}"] = hits
    for event in events.events:
        if hits := leaks.find_in(f"{event.subject} {json.dumps(event.data)} {json.dumps(event.headers)}"):
            found[f"event {event.subject}"] = hits
    for record in caplog.records:
        if hits := leaks.find_in(_record_text(record)):
            found[f"log {record.name} {record.levelname}: {record.getMessage()[:200]}"] = hits
    out, err = capfd.readouterr()
    for number, line in enumerate((out + err).splitlines()):
        if hits := leaks.find_in(line):
            found[f"output line {number}: {line[:200]}"] = hits
    assert not found, json.dumps(found, indent=1)
    # The scan saw real traffic: it would have found a leak had there been one.
    assert len(caplog.records) > 0
    assert {e.subject for e in events.events} >= {"ticket.created", "order.created", "payment.created"}
    print(
        f"\nsecret scan: {len(suite.responses)} responses, {len(caplog.records)} log records, "
        f"{len((out + err).splitlines())} output lines, {len(events.events)} events: no password or hash"
    )
