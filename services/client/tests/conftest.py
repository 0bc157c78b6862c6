"""Fixtures for the client's page tests: the whole suite running for real (`ticketing dev up`, the system tests'
`stack`), and the client's pages fetched through its gateway like a browser without JavaScript would."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
# The system tests' helpers and fixtures; with --import-mode=importlib their folder is not on sys.path.
sys.path.insert(0, str(ROOT / "tests"))

from systemkit import Stack, stack_env_fixture, stack_fixture  # noqa: E402, F401


@pytest.fixture
def browser(stack: Stack) -> Iterator[httpx.Client]:
    """A client on the gateway with its own cookie jar, sending the Origin a browser sends with a form."""
    with stack.client(headers={"Origin": stack.url}) as client:
        yield client
