"""The stack for the container tests: harness.py runs the rendered dev overlay on the engine run.sh started, with
the images run.sh built, and serves its Ingress on a loopback port. One stack for the whole session."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from containerkit import OVERRIDES, REPO, STATE, Stack


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """harness.py up, until the session ends; its log is .containers/harness.log."""
    ready = STATE / "ready.json"
    ready.unlink(missing_ok=True)
    log = (STATE / "harness.log").open("w")
    with socket.socket() as probe:  # a free loopback port for the ingress
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    command = [
        sys.executable,
        str(REPO / "infra/containers/harness.py"),
        "up",
        "--port",
        port,
        "--ready-file",
        str(ready),
    ]
    command += [arg for override in OVERRIDES for arg in ("--env", override)]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        deadline = time.monotonic() + 420
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the harness did not come up:\n{(STATE / 'harness.log').read_text()[-4000:]}")
            time.sleep(0.5)
        described = json.loads(ready.read_text())
        yield Stack(url=described["url"], pods=described["pods"])
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
