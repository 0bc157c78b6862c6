"""What every benchmark shares: Postgres and NATS on free ports, service processes, statistics, tables and results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from ticketing_dev.servers import NatsServer, PostgresServer, free_port
from ticketing_testing import TEST_JWT_KEY

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
PYTHON = sys.executable

# Every benchmark alternates ours and the baseline this many times and reports the median of the rounds.
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
# Seconds of load per round and side; short enough that the whole run stays within a few minutes.
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))


# ---------------------------------------------------------------------------------------------------------------
# Statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def median(values: Sequence[float]) -> float:
    """The median, NaN for no values."""
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------------------------------------------------------
# Results: one table per benchmark, and a JSON file under bench/results/


@dataclass
class Row:
    """One line of a benchmark's table: our figure, the baseline's, their ratio and the target."""

    figure: str
    unit: str
    ours: float
    baseline: float | None = None
    ours_p50_ms: float | None = None
    ours_p99_ms: float | None = None
    baseline_p50_ms: float | None = None
    baseline_p99_ms: float | None = None
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0) or self.baseline != self.baseline:
            return None
        return self.ours / self.baseline


@dataclass
class Result:
    """What one benchmark measured: the table rows, free-form details (per round) and notes."""

    name: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(self.seconds, 1),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
            "rounds": ROUNDS,
            "round_seconds": SECONDS,
            "rows": [asdict(row) | {"ratio": row.ratio} for row in self.rows],
            "details": self.details,
            "notes": self.notes,
        }

    def write(self) -> Path:
        """Write results/<name>.json (the latest run of this benchmark)."""
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{self.name}.json"
        path.write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")
        return path


def _num(value: float | None, unit: str = "") -> str:
    if value is None or value != value:
        return "-"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def _latency(p50: float | None, p99: float | None) -> str:
    if p50 is None and p99 is None:
        return "-"
    return f"{_num(p50)} / {_num(p99)}"


def render_table(results: Sequence[Result]) -> str:
    """A plain-text table of every row of the given results."""
    header = [
        "benchmark",
        "figure",
        "ours",
        "baseline",
        "ratio",
        "ours p50/p99 ms",
        "baseline p50/p99 ms",
        "target",
        "met",
    ]
    lines = [header]
    for result in results:
        for row in result.rows:
            lines.append(
                [
                    result.name,
                    row.figure,
                    _num(row.ours, row.unit),
                    _num(row.baseline, row.unit) if row.baseline is not None else "-",
                    f"{row.ratio:.2f}" if row.ratio is not None else "-",
                    _latency(row.ours_p50_ms, row.ours_p99_ms),
                    _latency(row.baseline_p50_ms, row.baseline_p99_ms),
                    row.target or "-",
                    {True: "yes", False: "NO", None: "-"}[row.met],
                ]
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for i, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(line)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def host_cpu_ticks() -> tuple[int, int]:
    """(steal, total) CPU ticks of the whole machine since boot, from /proc/stat; (0, 0) where there is none."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    # user nice system idle iowait irq softirq steal guest guest_nice; guest time is already counted in user.
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def say(message: str) -> None:
    """Progress on stderr, so the tables on stdout stay clean."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Postgres and NATS on free loopback ports, in a temporary folder


@dataclass
class Infra:
    """One Postgres and one nats-server for a benchmark, with helpers to make migrated service databases."""

    base: Path
    postgres: PostgresServer
    nats: NatsServer

    @property
    def nats_url(self) -> str:
        return self.nats.url

    def dsn(self, database: str) -> str:
        """A plain postgresql:// DSN for asyncpg."""
        return self.postgres.url(database, driver="postgresql")

    async def database(self, name: str, package: str | None = None) -> str:
        """Create a database (migrated with the service's migrations when a package is given); its SQLAlchemy URL."""
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        url = self.postgres.url(name)
        if package:
            await run_checked(
                [PYTHON, "-m", "ticketing_common.migrations", package], env={**os.environ, "DATABASE_URL": url}
            )
            # As the Deployments' `provision` initContainer: the streams and the service's durables, before it runs.
            await run_checked(
                [PYTHON, "-m", "ticketing_common.provision", package], env={**os.environ, "NATS_URL": self.nats_url}
            )
        return url

    def service_env(self, name: str, database_url: str, **extra: str) -> dict[str, str]:
        """The environment of a service process: its database, the broker, the test JWT key, quiet logs."""
        env = {
            **os.environ,
            "ENVIRONMENT": "test",
            "DATABASE_URL": database_url,
            "NATS_URL": self.nats_url,
            "NATS_CLIENT_ID": f"{name}-bench",
            "JWT_KEY": TEST_JWT_KEY,
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
        env.update(extra)
        return env

    def log_path(self, name: str) -> Path:
        return self.base / f"{name}.log"


@contextlib.asynccontextmanager
async def infra() -> AsyncIterator[Infra]:
    """Start Postgres and NATS in a temporary folder Postgres' system user can reach; remove it all afterwards."""
    base = Path(tempfile.mkdtemp(prefix="ticketing-bench-"))
    os.chmod(base, 0o755)  # Postgres runs as the ticketing-pg user when we are root
    postgres, nats = PostgresServer(base / "pg"), NatsServer(base / "nats")
    try:
        await asyncio.gather(asyncio.to_thread(postgres.start, 60.0), asyncio.to_thread(nats.start, 30.0))
        yield Infra(base, postgres, nats)
    finally:
        await asyncio.gather(asyncio.to_thread(nats.stop), asyncio.to_thread(postgres.stop), return_exceptions=True)
        shutil.rmtree(base, ignore_errors=True)


async def run_checked(argv: list[str], env: dict[str, str] | None = None) -> None:
    """Run a command to completion; raise with its output when it fails."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{out.decode(errors='replace')[-3000:]}")


# ---------------------------------------------------------------------------------------------------------------
# Server processes


@dataclass
class ServerProcess:
    """A server we started (uvicorn or anything else), in its own session so that stopping it stops its children."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (graceful: uvicorn runs the lifespan's shutdown), then SIGKILL after the timeout."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(name: str, argv: list[str], env: dict[str, str], log: Path, port: int) -> ServerProcess:
    """Start a server process with its output in a log file."""
    handle = open(log, "ab")  # noqa: SIM115 - handed to the child for its lifetime
    try:
        proc = subprocess.Popen(
            argv, env=env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        handle.close()
    return ServerProcess(name, proc, port, log)


def uvicorn_argv(target: str, port: int) -> list[str]:
    """How the issue says a service runs: one worker, no access log, uvloop and httptools."""
    return [
        PYTHON,
        "-m",
        "uvicorn",
        "--factory",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--log-level",
        "warning",
    ]


async def start_uvicorn(name: str, target: str, env: dict[str, str], log: Path, ready_path: str) -> ServerProcess:
    """Run `uvicorn --factory target` on a free port and wait until ready_path answers 200."""
    port = free_port()
    server = spawn(name, uvicorn_argv(target, port), env, log, port)
    try:
        await wait_http_ok(server, ready_path)
    except BaseException:
        server.stop()
        raise
    return server


async def wait_http_ok(server: ServerProcess, path: str, timeout: float = 60.0) -> None:
    """Poll a path until it answers 200; fail early (with the log) if the process dies."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{server.url}{path}")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{server.name} was not ready within {timeout:.0f}s:\n{server.tail()}")


@contextlib.asynccontextmanager
async def running(*servers_to_start: Any) -> AsyncIterator[list[ServerProcess]]:
    """Start servers concurrently (awaitables of ServerProcess) and stop every one of them afterwards."""
    results = await asyncio.gather(*servers_to_start, return_exceptions=True)
    started = [r for r in results if isinstance(r, ServerProcess)]
    try:
        for r in results:
            if isinstance(r, BaseException):
                raise r
        yield started
    finally:
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in started))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------------------------
# Profiles: BENCH_PROFILE=1 samples our server with py-spy during one round of load

PROFILE = os.environ.get("BENCH_PROFILE", "") not in ("", "0")


async def py_spy(pid: int, seconds: float, name: str) -> asyncio.subprocess.Process:
    """Start sampling a process for `seconds` into results/<name>.collapsed (await .wait() on the result)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    spy = str(Path(PYTHON).parent / "py-spy")
    out = RESULTS_DIR / f"{name}.collapsed"
    return await asyncio.create_subprocess_exec(
        *[spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "250"],
        *["--format", "raw", "--output", str(out), "--nonblocking"],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def summarize_profile(name: str, top: int = 25) -> str:
    """The functions with the most samples (inclusive and self) in results/<name>.collapsed; also written as .txt."""
    path = RESULTS_DIR / f"{name}.collapsed"
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] for f in stack.split(";")
        ]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    lines = [f"{name}: {total} samples"]
    for title, table in (("inclusive", inclusive), ("self", own)):
        lines.append(f"-- {title}")
        for frame, count in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"{100 * count / max(total, 1):5.1f}%  {frame}")
    text = "\n".join(lines)
    (RESULTS_DIR / f"{name}.txt").write_text(text + "\n")
    return text
