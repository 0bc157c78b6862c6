"""Tokens: verified once per process, but their expiry is checked on every use."""

import time
import uuid

import pytest

from ticketing_common import auth
from ticketing_testing import TEST_JWT_KEY


def test_a_cached_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    token = auth.create_token(user_id=uuid.uuid4(), email="a@example.com", key=TEST_JWT_KEY, ttl_seconds=60)
    assert auth.decode_token(token, key=TEST_JWT_KEY) is not None
    later = time.time() + 61
    monkeypatch.setattr(auth.time, "time", lambda: later)
    assert auth.decode_token(token, key=TEST_JWT_KEY) is None


def test_the_cache_is_keyed_by_the_key_too() -> None:
    token = auth.create_token(user_id=uuid.uuid4(), email="a@example.com", key=TEST_JWT_KEY, ttl_seconds=60)
    assert auth.decode_token(token, key=TEST_JWT_KEY) is not None
    assert auth.decode_token(token, key="another-key-0123456789abcdef-0123456789") is None
