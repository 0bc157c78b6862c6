"""Helpers for the system tests: start `ticketing dev up` as the user would, and drive it through the gateway.

Import it from any tests/test_*.py (`from systemkit import Stack, eventually, needs, signup`). Its fixtures (`stack`,
`stack_env`, `gateway`) are imported by tests/conftest.py and by the web client's tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from ticketing_dev.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
TICKETING = Path(sys.executable).parent / "ticketing"
START_TIMEOUT = 90.0
T = TypeVar("T")


def service_present(name: str) -> bool:
    """True when services/<name> holds its ticketing_<name> package."""
    return (ROOT / "services" / name / f"ticketing_{name}" / "app.py").is_file()


def needs(*names: str) -> pytest.MarkDecorator:
    """Name the services a system test drives. Every one is part of this project, so one absent from the checkout
    fails the collection of the test's module (an error in the run), never a skip that would hide the test."""
    missing = [name for name in names if not service_present(name)]
    if missing:
        raise RuntimeError(f"service package absent from the checkout: {', '.join(missing)} (services/<name>)")
    return pytest.mark.needs(*names)  # registered in tests/conftest.py; it only names them


def eventually(check: Callable[[], T], *, timeout: float = 15.0, interval: float = 0.05) -> T:
    """Retry a check until it returns a truthy value without failing an assertion; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
            error: BaseException = AssertionError(f"check returned {result!r}")
        except (AssertionError, httpx.TransportError) as exc:
            error = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout}s: {error}") from error
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True for a live (non-zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError, IndexError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def descendants(pid: int) -> set[int]:
    """Every process below pid, from /proc (the services are grandchildren of the runner)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@dataclass
class Stack:
    """A running `ticketing dev up`: its gateway URL, state folder and process, with helpers to poke at it."""

    url: str
    state_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def state(self) -> dict[str, Any]:
        """The runner's stack.json."""
        try:
            data: dict[str, Any] = json.loads((self.state_dir / "stack.json").read_text())
        except (OSError, ValueError):
            return {}
        return data

    def log(self) -> str:
        """Everything the runner printed so far."""
        return self.log_path.read_text(errors="replace")

    def client(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client on the gateway with its own cookie jar."""
        return httpx.Client(base_url=self.url, timeout=15.0, trust_env=False, **kwargs)

    def service_pid(self, name: str) -> int | None:
        pid = self.state().get("services", {}).get(name, {}).get("pid")
        return int(pid) if pid else None

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> int:
        """Signal a service (its whole process group); returns the pid that was signalled."""
        pid = self.service_pid(name)
        assert pid, f"{name} is not running"
        os.killpg(pid, sig)
        return pid

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 30.0) -> int:
        """Wait until the runner has started the service again and it is ready; returns the new pid."""
        url = self.state()["services"][name]["url"]

        def restarted() -> int | None:
            pid = self.service_pid(name)
            if not pid or pid == old_pid:
                return None
            with httpx.Client(timeout=2.0, trust_env=False) as client:
                return pid if client.get(f"{url}/readyz").status_code == 200 else None

        return eventually(restarted, timeout=timeout)

    def pids(self) -> set[int]:
        """The runner and every process it started, Postgres included."""
        found = {self.process.pid, *descendants(self.process.pid)}
        state = self.state()
        for key in ("postgres_pid", "nats_pid", "zygote_pid"):
            if state.get(key):
                found.add(int(state[key]))
                found |= descendants(int(state[key]))
        return found

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 40.0) -> int:
        """Signal the runner and wait for it; returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_stack(state_dir: Path, env: dict[str, str] | None = None, port: int | None = None) -> Stack:
    """Run `ticketing dev up` as the user would, on a free gateway port, and wait until every service is ready."""
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o755)  # as root, Postgres runs as a system user that must reach its data directory
    port = port or free_port()
    log_path = state_dir / f"runner-{uuid.uuid4().hex[:6]}.log"
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    full_env.pop("TICKETING_STATE_DIR", None)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(TICKETING), "dev", "up", "--state-dir", str(state_dir), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=ROOT,
            start_new_session=True,
        )
    stack = Stack(f"http://127.0.0.1:{port}", state_dir, process, log_path, env or {})
    deadline = time.monotonic() + START_TIMEOUT
    # stack.json is this runner's once it names its pid (a killed runner's file may still be there).
    while stack.state().get("runner_pid") != process.pid or stack.state().get("ready_seconds") is None:
        if process.poll() is not None or time.monotonic() > deadline:
            stack.stop()
            pytest.fail(f"`ticketing dev up` did not become ready:\n{stack.log()[-5000:]}")
        time.sleep(0.05)
    if "NOT READY" in stack.log():
        stack.stop()
        pytest.fail(f"a service did not become ready:\n{stack.log()[-5000:]}")
    return stack


def signup(stack: Stack, *, password: str = "correct horse battery") -> tuple[httpx.Client, dict[str, Any]]:
    """A new user signed up through the gateway: a client holding the session cookie, and the user body."""
    client = stack.client()
    email = f"user-{uuid.uuid4().hex[:12]}@example.com"
    response = client.post("/api/users/signup", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    return client, response.json()


# Named with `name=` so that a conftest can import them without its own `stack` parameters shadowing the import.
@pytest.fixture(scope="module", name="stack_env")
def stack_env_fixture() -> dict[str, str]:
    """Extra environment for every service of this module's stack; override it in a test module.

    A short ack_wait: an event a killed service had fetched comes back in 5 s instead of 30.
    """
    return {"NATS_ACK_WAIT_SECONDS": "5"}


@pytest.fixture(scope="module", name="stack")
def stack_fixture(stack_env: dict[str, str]) -> Iterator[Stack]:
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


@pytest.fixture(scope="module", name="gateway")
def gateway_fixture(stack: Stack) -> str:
    """The gateway URL of the module's stack."""
    return stack.url
