"""auth use cases: plain async functions over a unit of work, no FastAPI and no SQL."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ticketing_auth import repository
from ticketing_auth.models import User
from ticketing_common.errors import BadRequest, TooManyRequests
from ticketing_common.uow import UnitOfWork

_T = TypeVar("_T")

# argon2-cffi's defaults are Argon2id with the RFC 9106 low-memory profile.
_hasher = PasswordHasher()
# Hashing is the one CPU-heavy thing auth does, and argon2 releases the GIL: at most one hash per core runs at a
# time, in these threads, so a flood of sign-ins queues here while the event loop (and the rest of the machine)
# keeps answering. The default executor would run up to 32 hashes at once on a small node.
_HASHING = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="argon2")
# Verified when the email is unknown, so both failures take the same time.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


class EmailInUse(BadRequest):
    """Sign-up with an email that already has an account."""

    def __init__(self) -> None:
        super().__init__("Email in use", field="email")


class TooManySignins(TooManyRequests):
    """Too many failed sign-ins for this account or from this address (429 with Retry-After)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(retry_after, "Too many failed sign-ins; try again later")


@dataclass(frozen=True)
class SigninLimits:
    """How many failed sign-ins a key may have in one window before sign-in is refused with 429."""

    per_account: int
    per_address: int
    window_seconds: int


def clock() -> datetime:
    """Now; tests replace it to move time past a window without sleeping."""
    return datetime.now(UTC)


async def _hash(function: Callable[..., _T], *args: str) -> _T:
    return await asyncio.get_running_loop().run_in_executor(_HASHING, function, *args)


class InvalidCredentials(BadRequest):
    """Unknown email or wrong password; deliberately indistinguishable."""

    def __init__(self) -> None:
        super().__init__("Invalid credentials")


async def sign_up(*, uow: UnitOfWork, email: str, password: str) -> User:
    """Create a user; the database's unique index decides races between identical emails."""
    password_hash = await _hash(_hasher.hash, password)
    user = await repository.add_user(uow, email=email, password_hash=password_hash)
    if user is None:
        raise EmailInUse()
    return user


async def sign_in(*, uow: UnitOfWork, email: str, password: str, address: str, limits: SigninLimits) -> User:
    """The user with these credentials, or InvalidCredentials after the same amount of work.

    Refused with 429 before any hashing while this account (known or not, so a 429 reveals nothing) or this client
    address has used up its failures in the current window; every failure counts against both.
    """
    account, client = f"account:{email}", f"address:{address}"
    now = clock()
    window = timedelta(seconds=limits.window_seconds)
    failures = await repository.signin_failures(uow, [account, client])
    waits = [
        (started + window - now).total_seconds()
        for key, allowed in ((account, limits.per_account), (client, limits.per_address))
        if key in failures
        for started, count in [failures[key]]
        if count >= allowed and started + window > now
    ]
    if waits:
        raise TooManySignins(max(waits))
    user = await repository.find_user_by_email(uow, email)
    stored = user.password_hash if user is not None else _DUMMY_HASH
    try:
        await _hash(_hasher.verify, stored, password)
    except (VerificationError, InvalidHashError):
        await repository.record_signin_failure(uow, [account, client], now=now, window_seconds=limits.window_seconds)
        raise InvalidCredentials() from None
    if user is None:
        await repository.record_signin_failure(uow, [account, client], now=now, window_seconds=limits.window_seconds)
        raise InvalidCredentials()
    if account in failures:
        await repository.clear_signin_failures(uow, account)
    return user
