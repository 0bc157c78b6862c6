"""The state folder: a lock held for the runner's lifetime, stack.json describing what runs, and the runner's pid."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from pathlib import Path
from typing import Any, TextIO

from ticketing_dev.errors import DevStackError

STATE_FILE = "stack.json"
LOCK_FILE = "dev.lock"
PID_FILE = "dev.pid"


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The running stack's description (stack.json), or None."""
    try:
        data: dict[str, Any] = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data


def write_state(state_dir: Path, data: dict[str, Any]) -> None:
    """Replace stack.json atomically, so a reader never sees half of it."""
    tmp = state_dir / f"{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(state_dir / STATE_FILE)


def running_pid(state_dir: Path) -> int | None:
    """The pid of the runner that holds the state folder's lock, or None when no stack runs there."""
    lock_path = state_dir / LOCK_FILE
    if not lock_path.exists():
        return None
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            try:
                return int((state_dir / PID_FILE).read_text().strip())
            except (OSError, ValueError):
                return -1
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


class StackLock:
    """An flock on <state>/dev.lock: released by the kernel however the runner ends, so it never goes stale."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._handle: TextIO | None = None

    def acquire(self) -> None:
        """Take the lock, or fail with who holds it."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.state_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            pid = running_pid(self.state_dir)
            state = read_state(self.state_dir) or {}
            where = f", gateway {state['gateway_url']}" if state.get("gateway_url") else ""
            raise DevStackError(
                f"the dev stack is already running (pid {pid}{where}); `ticketing dev down` stops it"
            ) from None
        self._handle = handle
        (self.state_dir / PID_FILE).write_text(f"{os.getpid()}\n")

    def release(self) -> None:
        """Let go of the lock (also done by the kernel when the runner dies)."""
        if self._handle is None:
            return
        with contextlib.suppress(OSError):
            (self.state_dir / PID_FILE).unlink()
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None


def pid_alive(pid: int | None) -> bool:
    """Whether a process runs under this pid (a zombie does not count)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is gone for our purposes.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def cmdline(pid: int) -> str:
    """A process's command line with spaces between the arguments, or "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stop_runner(state_dir: Path, timeout: float = 30.0) -> int | None:
    """Signal the runner holding the state folder to stop and wait until it has; returns its pid, or None."""
    pid = running_pid(state_dir)
    if pid is None:
        return None
    if pid <= 0:
        raise DevStackError(f"a dev stack holds {state_dir} but its pid is unknown")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_pid(state_dir) is not None:
        if time.monotonic() > deadline:
            raise DevStackError(f"the dev stack (pid {pid}) did not stop within {timeout:.0f}s")
        time.sleep(0.05)
    return pid
