"""Fixtures for the client's page tests: the whole suite running for real (`ticketing dev up`, as in tests/), and
the client's pages fetched through its gateway like a browser without JavaScript would."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
# The system tests' helpers start and stop the stack; with --import-mode=importlib their folder is not on sys.path.
sys.path.insert(0, str(ROOT / "tests"))

from systemkit import Stack, start_stack  # noqa: E402


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """The whole suite, started once per module in a temp state folder."""
    base = Path(tempfile.mkdtemp(prefix="ticketing-client-"))
    os.chmod(base, 0o755)
    running = start_stack(base / "state", {"NATS_ACK_WAIT_SECONDS": "5"})
    try:
        yield running
    finally:
        code = running.stop()
        if code != 0:
            print(running.log()[-5000:])
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def browser(stack: Stack) -> Iterator[httpx.Client]:
    """A client on the gateway with its own cookie jar, sending the Origin a browser sends with a form."""
    with stack.client(headers={"Origin": stack.url}) as client:
        yield client
