"""System-test fixtures: the whole suite as `make dev` runs it (`ticketing dev up` on free ports, a temp state
folder), driven over HTTP through the gateway only.

Reuse: `stack` (module-scoped, started once per test module) yields a systemkit.Stack; `gateway` yields its URL.
Override `stack_env` in a module to pass settings to every service (e.g. ORDER_EXPIRATION_SECONDS). Helpers
(`needs("orders")`, `signup(stack)`, `eventually(...)`, `start_stack(...)`) are in tests/systemkit.py.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Test modules here import systemkit; with --import-mode=importlib this folder is not on sys.path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from systemkit import Stack, start_stack


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(*services): the services a system test drives (systemkit.needs)")


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    """Extra environment for every service of this module's stack; override it in a test module.

    A short ack_wait: an event a killed service had fetched comes back in 5 s instead of 30.
    """
    return {"NATS_ACK_WAIT_SECONDS": "5"}


@pytest.fixture(scope="module")
def stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    """The whole suite, started once per test module in a temp state folder, stopped (and checked) afterwards."""
    base = Path(tempfile.mkdtemp(prefix="ticketing-system-"))
    os.chmod(base, 0o755)
    running = start_stack(base / "state", stack_env)
    try:
        yield running
    finally:
        code = running.stop()
        if code != 0:
            print(running.log()[-5000:])
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> str:
    """The gateway URL of the module's stack."""
    return stack.url


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, attach the tail of the stack's interleaved log to the report; keep each phase's report on the
    item (`item.rep_call`)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    # The browser tests' fixtures read it while tearing down, to save the page of a failed test.
    setattr(item, f"rep_{report.when}", report)
    running = getattr(item, "funcargs", {}).get("stack")
    if report.failed and isinstance(running, Stack):
        report.sections.append(("ticketing dev up (last lines)", running.log()[-8000:]))
