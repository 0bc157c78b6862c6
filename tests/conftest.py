"""System-test fixtures: the whole suite as `make dev` runs it (`ticketing dev up` on free ports, a temp state
folder), driven over HTTP through the gateway only.

Reuse: `stack` (module-scoped, started once per test module) yields a systemkit.Stack; `gateway` yields its URL.
Override `stack_env` in a module to pass settings to every service (e.g. ORDER_EXPIRATION_SECONDS). The fixtures
and the helpers (`needs("orders")`, `signup(stack)`, `eventually(...)`, `start_stack(...)`) are in tests/systemkit.py.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Test modules here import systemkit; with --import-mode=importlib this folder is not on sys.path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parent))

# The stack fixtures live in systemkit so that the web client's page tests use the same ones.
from systemkit import Stack, gateway_fixture, stack_env_fixture, stack_fixture  # noqa: F401


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(*services): the services a system test drives (systemkit.needs)")
    config.addinivalue_line(
        "markers",
        "alone: `make test` runs it by itself after the parallel run, with no other test's load beside it (chaos)",
    )


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
