"""auth use cases: plain async functions over a unit of work, no FastAPI and no SQL."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ticketing_auth import repository
from ticketing_auth.models import User
from ticketing_common.errors import BadRequest
from ticketing_common.uow import UnitOfWork

# argon2-cffi's defaults are Argon2id with the RFC 9106 low-memory profile.
_hasher = PasswordHasher()
# Verified when the email is unknown, so both failures take the same time.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


class EmailInUse(BadRequest):
    """Sign-up with an email that already has an account."""

    def __init__(self) -> None:
        super().__init__("Email in use", field="email")


class InvalidCredentials(BadRequest):
    """Unknown email or wrong password; deliberately indistinguishable."""

    def __init__(self) -> None:
        super().__init__("Invalid credentials")


async def sign_up(*, uow: UnitOfWork, email: str, password: str) -> User:
    """Create a user; the database's unique index decides races between identical emails."""
    password_hash = await asyncio.to_thread(_hasher.hash, password)
    user = await repository.add_user(uow, email=email, password_hash=password_hash)
    if user is None:
        raise EmailInUse()
    return user


async def sign_in(*, uow: UnitOfWork, email: str, password: str) -> User:
    """The user with these credentials, or InvalidCredentials after the same amount of work."""
    user = await repository.find_user_by_email(uow, email)
    stored = user.password_hash if user is not None else _DUMMY_HASH
    try:
        await asyncio.to_thread(_hasher.verify, stored, password)
    except (VerificationError, InvalidHashError):
        raise InvalidCredentials() from None
    if user is None:
        raise InvalidCredentials()
    return user
