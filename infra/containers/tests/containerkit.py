"""What the container tests share: the stack's handle, the docker CLI, polling, and a signed-up user."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
STATE = REPO / ".containers"
API_SERVICES = ("auth", "tickets", "orders", "expiration", "payments")
SERVICES = (*API_SERVICES, "client")  # every image run.sh builds; the web client has no database and no NATS
# Test-only overrides of what the manifests set (not manifest edits): a short reservation window, so that the
# expiration journey takes seconds, and a short ack wait, so that a redelivery after a SIGKILL does too.
ORDER_EXPIRATION_SECONDS = 4
OVERRIDES = [
    f"orders-depl/app/ORDER_EXPIRATION_SECONDS={ORDER_EXPIRATION_SECONDS}",
    *(f"{s}-depl/app/NATS_ACK_WAIT_SECONDS=5" for s in API_SERVICES),
]
T = TypeVar("T")


def eventually(check: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.2) -> T:
    """Poll until `check` returns something truthy; fail with the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not true after {timeout} s: {value!r}")
        time.sleep(interval)


def docker(*args: str) -> str:
    """The docker CLI on the engine of this run."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


@dataclass
class Stack:
    """The running overlay: the gateway URL and the pods the harness made."""

    url: str
    pods: dict[str, Any]

    def client(self) -> httpx.Client:
        """A client of the gateway, as a browser or curl would use ticketing.dev."""
        return httpx.Client(base_url=self.url, timeout=30, trust_env=False, headers={"Host": "ticketing.dev"})

    def container(self, workload: str, name: str = "app") -> str:
        """The docker name of a workload's container (its first pod)."""
        pod = next(p for p in self.pods.values() if p["workload"] == workload)
        return str(pod["containers"][name])

    def sigkill(self, container: str) -> int:
        """SIGKILL the container's main process from the host, as a crash or the OOM killer would; its restart count."""
        count = int(docker("inspect", "-f", "{{.RestartCount}}", container))
        os.kill(int(docker("inspect", "-f", "{{.State.Pid}}", container)), signal.SIGKILL)
        return count

    def restart_count(self, container: str) -> int:
        """How often the engine restarted the container (the pod's restartCount)."""
        return int(docker("inspect", "-f", "{{.RestartCount}}", container))


def signup(stack: Stack) -> tuple[httpx.Client, dict[str, Any]]:
    """A new user through the gateway; the client carries the session as a Bearer token.

    The manifests set COOKIE_SECURE=true, so the cookie is Secure and a client keeps it only over https; the
    harness's gateway is plain http on loopback, so the tests send the same JWT the contract's other way.
    """
    client = stack.client()
    email = f"c-{uuid.uuid4().hex[:12]}@example.com"
    response = client.post("/api/users/signup", json={"email": email, "password": "correct horse battery"})
    assert response.status_code == 201, response.text
    cookie = response.headers["set-cookie"]
    assert "secure" in cookie.lower() and "httponly" in cookie.lower(), cookie
    token = cookie.split("session=", 1)[1].split(";", 1)[0]
    client.headers["Authorization"] = f"Bearer {token}"
    return client, response.json()
