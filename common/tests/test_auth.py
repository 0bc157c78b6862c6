"""Tokens: verified once per process, but their expiry is checked on every use."""

import gc
import time
import tracemalloc
import uuid
from collections.abc import Callable

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


def _retained_while(work: Callable[[], object]) -> int:
    """Bytes still allocated after `work` returned, and whatever it returned was dropped."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_junk_tokens_are_never_kept() -> None:
    """150 distinct 1 MB bearer tokens once grew a service by ~140 MB for good: every one was cached."""

    def flood() -> None:
        for n in range(150):
            assert auth.decode_token(f"{n:06d}" + "x" * 1_000_000, key=TEST_JWT_KEY) is None
            assert auth.decode_token(f"e30.e30.{n}" + "A" * 3000, key=TEST_JWT_KEY) is None

    assert _retained_while(flood) < 1_000_000


def test_the_cache_of_valid_tokens_is_bounded() -> None:
    tokens = [
        auth.create_token(user_id=uuid.uuid4(), email=f"{n}@example.com", key=TEST_JWT_KEY, ttl_seconds=60)
        for n in range(auth._VERIFIED.size + 500)
    ]
    for token in tokens:
        assert auth.decode_token(token, key=TEST_JWT_KEY) is not None

    assert len(auth._VERIFIED) == auth._VERIFIED.size
    assert auth.decode_token(tokens[0], key=TEST_JWT_KEY) is not None  # evicted, verified again


def test_an_oversized_token_is_refused_even_when_its_signature_is_good() -> None:
    token = auth.create_token(user_id=uuid.uuid4(), email="a" * 5000 + "@example.com", key=TEST_JWT_KEY, ttl_seconds=60)
    assert auth.decode_token(token, key=TEST_JWT_KEY) is None
