"""Issue 15 #6: failed sign-ins are limited per account and per client address, and hashing is bounded."""

import os
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from ticketing_auth import service
from ticketing_auth.app import create_app
from ticketing_auth.settings import Settings
from ticketing_testing.plugin import RunningService


class FakeClock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(service, "clock", fake)
    return fake


def client_from(auth: RunningService, address: str) -> httpx.AsyncClient:
    """A client of the same app that connects from another address."""
    transport = httpx.ASGITransport(app=auth.app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def sign_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/api/users/signin", json={"email": email, "password": password})


async def test_forty_wrong_passwords_lock_the_account_until_the_window_ends(auth: RunningService, clock) -> None:
    email = f"victim-{uuid.uuid4().hex[:8]}@example.com"
    assert (await auth.client.post("/api/users/signup", json={"email": email, "password": "right password"})).is_success
    statuses = [(await sign_in(auth.client, email, f"guess {n:03}")).status_code for n in range(40)]
    assert statuses == [400] * 10 + [429] * 30
    refused = await sign_in(auth.client, email, "right password")
    assert refused.status_code == 429
    assert refused.json() == {"errors": [{"message": "Too many failed sign-ins; try again later"}]}
    assert refused.headers["Retry-After"] == "900"
    assert "set-cookie" not in refused.headers
    clock.advance(600)
    later = await sign_in(auth.client, email, "right password")
    assert (later.status_code, later.headers["Retry-After"]) == (429, "300")
    clock.advance(300)
    assert (await sign_in(auth.client, email, "right password")).status_code == 200


@pytest.fixture
async def strict_auth(start_service) -> RunningService:
    """auth allowing 3 failures per account, so a test needs few (slow) hashes."""
    return await start_service(create_app, Settings, "ticketing_auth", signin_max_failures_per_account=3)


async def test_the_account_limit_holds_from_every_address_and_for_unknown_emails(strict_auth, clock) -> None:
    auth = strict_auth
    email = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    for n in range(3):
        async with client_from(auth, f"198.51.100.{n + 1}") as client:
            assert (await sign_in(client, email, "wrong password")).status_code == 400
    async with client_from(auth, "198.51.100.99") as client:
        assert (await sign_in(client, email, "wrong password")).status_code == 429


async def test_one_address_is_limited_across_accounts(start_service, clock) -> None:
    auth = await start_service(create_app, Settings, "ticketing_auth", signin_max_failures_per_address=5)
    async with client_from(auth, "203.0.113.7") as attacker, client_from(auth, "203.0.113.8") as bystander:
        emails = [f"user-{uuid.uuid4().hex[:8]}@example.com" for _ in range(6)]
        statuses = [(await sign_in(attacker, email, "wrong password")).status_code for email in emails]
        assert statuses == [400] * 5 + [429]
        # Another address is untouched, and so is an account the attacker never tried.
        assert (await sign_in(bystander, emails[5], "wrong password")).status_code == 400


async def test_a_success_forgets_the_accounts_failures(strict_auth, clock) -> None:
    auth = strict_auth
    email = f"forgetful-{uuid.uuid4().hex[:8]}@example.com"
    await auth.client.post("/api/users/signup", json={"email": email, "password": "right password"})
    async with client_from(auth, "192.0.2.10") as client:
        for _ in range(2):
            assert (await sign_in(client, email, "wrong password")).status_code == 400
        assert (await sign_in(client, email, "right password")).status_code == 200
        for _ in range(2):
            assert (await sign_in(client, email, "wrong password")).status_code == 400
        assert (await sign_in(client, email, "right password")).status_code == 200


def test_password_hashing_runs_at_most_one_hash_per_core() -> None:
    assert service._HASHING._max_workers == (os.cpu_count() or 1)
