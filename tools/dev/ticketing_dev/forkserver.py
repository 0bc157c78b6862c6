"""The fork server ("zygote"): a template process that forks services and migrations, reaps them, and prefixes
their logs; and `Zygote`, the runner's handle on it.

Why: importing a service costs ~2 s of CPU; five of them in separate interpreters would not fit the 5 s start-up
budget on two cores. So the zygote imports what every service shares once, then forks one child per service that
serves `ticketing_<svc>.app:create_app` with uvicorn exactly as `uvicorn --factory ticketing_<svc>.app:create_app`
does, and one child per migration. TICKETING_DEV_FORK=0 execs a real `python -m uvicorn --factory ...` per service
instead.

The zygote also reaps its children (it reports each exit to the runner, which restarts crashed services) and
prefixes their log lines, so the runner never blocks on a child. If the runner dies, the zygote sees its stdin
close and takes every service down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import selectors
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ticketing_dev.console import COLORS, LogPump
from ticketing_dev.errors import DevStackError

STOP_TIMEOUT = 10.0  # how long services get to stop after SIGTERM before SIGKILL

PRELOAD = (
    "uvicorn",
    "uvicorn.lifespan.on",
    "uvicorn.loops.auto",
    "uvicorn.protocols.http.auto",
    "uvicorn.protocols.websockets.auto",
    "fastapi",
    "sqlalchemy.dialects.postgresql.asyncpg",
    "ticketing_common.app",
    "ticketing_common.auth",
    "ticketing_common.db",
    "ticketing_common.errors",
    "ticketing_common.events",
    "ticketing_common.listener",
    "ticketing_common.migrations",
    "ticketing_common.outbox",
    "ticketing_common.settings",
    "ticketing_common.validation",
    "alembic.command",
    "alembic.op",
)


@dataclass
class _ZygoteLoop:
    """The zygote's loop state."""

    pending: bytes = b""
    spawned: int = 0
    stopping: bool = False


@dataclass
class _Child:
    """A child of the zygote."""

    pid: int
    name: str
    log_fd: int


def _zygote_child(command: dict[str, Any], log_w: int, close_fds: list[int], exec_mode: bool) -> None:
    """In the forked child: become the service (or migration) and never return."""
    code = 1
    try:
        os.setpgid(0, 0)  # our own process group, so the runner can signal the service and anything it spawns
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        # As every Python interpreter starts (and so `uvicorn --factory` in production): a write to a socket whose
        # peer is gone raises BrokenPipeError. SIG_DFL would kill the service instead, e.g. when asyncpg writes to
        # a connection of a Postgres that just crashed.
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_w, 1)
        os.dup2(log_w, 2)
        for fd in {devnull, log_w, *close_fds} - {0, 1, 2}:
            with contextlib.suppress(OSError):
                os.close(fd)
        os.environ.clear()
        os.environ.update(command["env"])
        package = command["package"]
        if command["kind"] == "migrate":
            if exec_mode:
                os.execv(sys.executable, [sys.executable, "-m", "ticketing_common.migrations", package])
            from ticketing_common.migrations import upgrade

            upgrade(package, command["env"]["DATABASE_URL"])
            code = 0
        else:
            argv = [f"{package}.app:create_app", "--host", "127.0.0.1", "--port", str(command["port"])]
            if exec_mode:
                os.execv(sys.executable, [sys.executable, "-m", "uvicorn", "--factory", *argv])
            sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - line-buffered into the log pipe
            sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
            import uvicorn

            uvicorn.run(argv[0], factory=True, host="127.0.0.1", port=int(command["port"]))
            code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def zygote_main(argv: list[str]) -> None:
    """`python -m ticketing_dev.forkserver zygote LOG_FD`: serve spawn commands read from stdin."""
    log_fd = int(argv[0])
    exec_mode = os.environ.get("TICKETING_DEV_FORK", "1") == "0"
    colors = os.isatty(log_fd) and "NO_COLOR" not in os.environ
    control = 1

    def send(message: dict[str, Any]) -> None:
        data = (json.dumps(message) + "\n").encode()
        try:
            while data:
                data = data[os.write(control, data) :]
        except BrokenPipeError:
            pass  # the runner is gone; stdin's EOF stops us next

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides when we stop
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    if not exec_mode:
        # Only what every service shares; each child imports its own package after the fork (~0.2 s), so no
        # service carries another's modules, models or import-time state.
        for module in PRELOAD:
            try:
                importlib.import_module(module)
            except Exception as exc:
                send({"event": "preload-failed", "package": module, "error": f"{type(exc).__name__}: {exc}"})
    sys.stdout.flush()
    sys.stderr.flush()
    send({"event": "ready", "pid": os.getpid()})

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: None)  # wakes the loop; then we stop as on EOF
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, "stdin")
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    children: dict[int, _Child] = {}
    pumps: dict[int, LogPump] = {}
    state = _ZygoteLoop()

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = children.pop(pid, None)
            if child is not None:
                send({"event": "exited", "pid": pid, "name": child.name, "code": os.waitstatus_to_exitcode(status)})

    def spawn(command: dict[str, Any]) -> None:
        log_r, log_w = os.pipe()
        color = COLORS[state.spawned % len(COLORS)] if colors else None
        state.spawned += 1
        inherited = [log_fd, wake_r, wake_w, log_r, *pumps]
        pid = os.fork()
        if pid == 0:
            selector.close()
            _zygote_child(command, log_w, inherited, exec_mode)
        os.close(log_w)
        os.set_blocking(log_r, False)
        children[pid] = _Child(pid, command["name"], log_r)
        pumps[log_r] = LogPump(command.get("label", command["name"]), log_fd, color)
        selector.register(log_r, selectors.EVENT_READ, "log")
        send({"event": "spawned", "id": command.get("id"), "pid": pid, "name": command["name"]})

    def pump(fd: int) -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if chunk:
            pumps[fd].feed(chunk)
            return
        pumps.pop(fd).close()
        selector.unregister(fd)
        os.close(fd)

    def serve(timeout: float | None) -> None:
        for key, _ in selector.select(timeout=timeout):
            if key.data == "stdin":
                chunk = os.read(0, 65536)
                if not chunk:
                    state.stopping = True
                    selector.unregister(0)
                    continue
                *lines, state.pending = (state.pending + chunk).split(b"\n")
                for line in lines:
                    if line.strip() and not state.stopping:
                        spawn(json.loads(line))
            elif key.data == "wake":
                with contextlib.suppress(BlockingIOError):
                    if bytes([signal.SIGTERM]) in os.read(wake_r, 4096):
                        state.stopping = True
                reap()
            else:
                pump(key.fd)

    while not state.stopping:
        serve(None)
    # Stop: SIGTERM every service's process group, keep pumping their last lines, SIGKILL stragglers.
    for pid in list(children):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while children and time.monotonic() < deadline:
        serve(0.05)
        reap()
    for pid in list(children):
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    while children:
        serve(0.05)
        reap()
    drain_deadline = time.monotonic() + 1.0
    while pumps and time.monotonic() < drain_deadline:
        serve(0.05)
    for log_pump in pumps.values():
        log_pump.close()
    os._exit(0)


class Zygote:
    """The runner's handle on the zygote: spawn children, learn of their exits."""

    def __init__(self, on_exit: Callable[[int, str, int], None]) -> None:
        self.on_exit = on_exit
        self.process: asyncio.subprocess.Process | None = None
        self.preload_failures: dict[str, str] = {}
        self._ready: asyncio.Future[int] | None = None
        self._spawns: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._next_id = 0
        self._reader: asyncio.Task[None] | None = None

    async def start(self, log_fd: int) -> None:
        """Start the template process; it imports what the services share while the servers start."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ticketing_dev.forkserver",
            "zygote",
            str(log_fd),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=(log_fd,),
            start_new_session=True,  # Ctrl-C reaches the runner only; it stops the children in order
        )
        self._reader = asyncio.create_task(self._read(), name="zygote-reader")

    async def wait_ready(self) -> None:
        """Wait until the zygote has imported what the services share."""
        assert self._ready is not None
        await self._ready

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            message = json.loads(line)
            event = message["event"]
            if event == "ready" and self._ready and not self._ready.done():
                self._ready.set_result(message["pid"])
            elif event == "preload-failed":
                self.preload_failures[message["package"]] = message["error"]
            elif event == "spawned":
                future = self._spawns.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message["pid"])
            elif event == "exited":
                waiter = self._exits.pop(message["pid"], None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message["code"])
                self.on_exit(message["pid"], message["name"], message["code"])
        error = DevStackError("the service launcher exited unexpectedly")
        if self._ready and not self._ready.done():
            self._ready.set_exception(error)
        for future in [*self._spawns.values(), *self._exits.values()]:
            if not future.done():
                future.set_exception(error)

    async def spawn(self, **command: Any) -> int:
        """Fork a child (kind=service|migrate); returns its pid."""
        assert self.process is not None and self.process.stdin is not None
        self._next_id += 1
        command["id"] = self._next_id
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._spawns[self._next_id] = future
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()
        pid = await future
        self._exits[pid] = asyncio.get_running_loop().create_future()
        return pid

    async def wait_exit(self, pid: int) -> int:
        """The exit code of a child spawned by this zygote."""
        future = self._exits.get(pid)
        if future is None:
            return 0
        return await future

    def watch_exit(self, pid: int) -> None:
        """Stop tracking a pid's exit future (service exits are handled by on_exit)."""
        self._exits.pop(pid, None)

    async def close(self) -> None:
        """Close stdin: the zygote stops every child it still has, then exits."""
        if self.process is None:
            return
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), timeout=STOP_TIMEOUT + 5)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "zygote":
        zygote_main(sys.argv[2:])
