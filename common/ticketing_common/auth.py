"""JWT sessions as the contract fixes them: HS256 with exp, in the `session` cookie or a Bearer header."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request, Response
from pydantic import BaseModel, ConfigDict

from ticketing_common.errors import NotAuthorized

SESSION_COOKIE = "session"
ALGORITHM = "HS256"


class UserClaims(BaseModel):
    """The signed-in user as the token says."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    email: str
    iat: int


def create_token(*, user_id: uuid.UUID, email: str, key: str, ttl_seconds: int, now: datetime | None = None) -> str:
    """Sign a session token for a user."""
    issued = now or datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "email": email,
        "iat": int(issued.timestamp()),
        "exp": int((issued + timedelta(seconds=ttl_seconds)).timestamp()),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


# A session token this suite signs is about 250 bytes; anything far longer is not one of ours, and is refused before
# it is parsed or kept anywhere.
MAX_TOKEN_LENGTH = 4096


def decode_token(token: str, *, key: str) -> UserClaims | None:
    """The claims of a valid token; None for a malformed, forged, alg=none, wrong-key, expired or oversized one."""
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    verified = _VERIFIED.get(token, key)
    if verified is None:
        verified = _verify_signature(token, key)
        if verified is None:
            return None
        _VERIFIED.put(token, key, verified)
    claims, expires = verified
    # The signature never changes its verdict; the expiry is checked on every use.
    return claims if expires > time.time() else None


class _VerifiedTokens:
    """Tokens whose signature has been checked, most recently used last; bounded, and holding valid tokens only.

    A client sends the same session token with every request; verifying its HMAC once per process, not once per
    request, took ~5% off the cost of a write (bench/). Forged or malformed tokens are never kept, so a flood of
    distinct junk tokens costs CPU for the check and nothing more.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], tuple[UserClaims, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str, key: str) -> tuple[UserClaims, int] | None:
        with self._lock:
            found = self._items.get((token, key))
            if found is not None:
                self._items.move_to_end((token, key))
            return found

    def put(self, token: str, key: str, verified: tuple[UserClaims, int]) -> None:
        with self._lock:
            self._items[(token, key)] = verified
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


_VERIFIED = _VerifiedTokens(size=4096)


def _verify_signature(token: str, key: str) -> tuple[UserClaims, int] | None:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "exp", "iat"], "verify_exp": False},
        )
        user = UserClaims(id=uuid.UUID(str(claims["sub"])), email=str(claims.get("email", "")), iat=int(claims["iat"]))
        return user, int(claims["exp"])
    except (jwt.PyJWTError, ValueError, TypeError):
        return None


def token_from_request(request: Request) -> str | None:
    """The session cookie, or else a Bearer token."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def user_from_request(request: Request) -> UserClaims | None:
    """The signed-in user, or None for an anonymous caller."""
    token = token_from_request(request)
    if token is None:
        return None
    return decode_token(token, key=request.app.state.settings.jwt_key)


# Both dependencies are async on purpose: FastAPI runs sync dependencies in a worker thread, which costs more than
# the decode. And require_user reads the request itself rather than depending on get_current_user: every level of
# dependencies is another pass of FastAPI's resolver, on every signed-in request (bench/).
async def get_current_user(request: Request) -> UserClaims | None:
    """The signed-in user, or None for an anonymous caller."""
    return user_from_request(request)


async def require_user(request: Request) -> UserClaims:
    """The signed-in user, or 401 Not authorized."""
    user = user_from_request(request)
    if user is None:
        raise NotAuthorized()
    return user


OptionalUser = Annotated[UserClaims | None, Depends(get_current_user)]
CurrentUser = Annotated[UserClaims, Depends(require_user)]


def set_session_cookie(response: Response, token: str, *, secure: bool, max_age: int) -> None:
    """Set the HttpOnly, SameSite=Lax session cookie."""
    response.set_cookie(SESSION_COOKIE, token, max_age=max_age, httponly=True, samesite="lax", path="/", secure=secure)


def clear_session_cookie(response: Response, *, secure: bool) -> None:
    """Expire the session cookie."""
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=secure)
