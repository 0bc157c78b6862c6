"""The `ticketing` command: run the local stack, look at the broker, follow the events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import unicodedata
import urllib.parse
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ticketing_common.events import EVENT_TYPES, STREAMS, Event
from ticketing_dev.errors import DevStackError
from ticketing_dev.repo import default_state_dir
from ticketing_dev.runner import DEFAULT_GATEWAY_HOST, DEFAULT_GATEWAY_PORT, DevOptions, run_dev_stack
from ticketing_dev.state import read_state, running_pid, stop_runner

DEFAULT_MONITOR_URL = "http://127.0.0.1:8222"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEADLETTER_STREAM = "DEADLETTERS"

app = typer.Typer(
    help="The ticketing suite on your machine: `ticketing dev up`, `ticketing broker`, `ticketing events tail`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
dev_app = typer.Typer(help="The local stack (what `make dev` runs).", no_args_is_help=True)
events_app = typer.Typer(help="Events on the bus.", no_args_is_help=True)
deadletters_app = typer.Typer(help="Events the services' consumers set aside.", no_args_is_help=True)
app.add_typer(dev_app, name="dev")
app.add_typer(events_app, name="events")
app.add_typer(deadletters_app, name="deadletters")

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


class CliError(Exception):
    """A failure the user can act on: printed as one line, exit code 1."""


def _fail(message: str) -> typer.Exit:
    err.print(Text.assemble(("error:", "red"), " ", _printable(message)), soft_wrap=True)
    return typer.Exit(1)


StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="TICKETING_STATE_DIR",
        help="Where the stack keeps its data, logs and pid (default: <repo>/.state).",
        show_default=False,
    ),
]


ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        "-s",
        envvar="TICKETING_NATS_URL",
        help="NATS URL. Default: the running dev stack's, else nats://127.0.0.1:4222.",
        show_default=False,
    ),
]


def _nats_url(server: str | None) -> str:
    """--server, else the running dev stack's NATS, else the default port on this machine; CliError if malformed."""
    return _check_url(
        server or (_running_state() or {}).get("nats_url") or DEFAULT_NATS_URL, ("nats", "tls"), "--server"
    )


def _state_dir(value: Path | None) -> Path:
    try:
        return value.resolve() if value else default_state_dir()
    except DevStackError as exc:
        raise _fail(str(exc)) from None


# ---------------------------------------------------------------------------------------------------------------
# ticketing dev


def _parse_ports(values: list[str]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for value in values:
        name, sep, port = value.partition("=")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise _fail(f"--service-port wants NAME=PORT (e.g. auth=8001), got {value!r}")
        ports[name.strip()] = int(port)
    return ports


@dev_app.command("up")
def dev_up(
    port: Annotated[
        int, typer.Option("--port", "-p", envvar="TICKETING_GATEWAY_PORT", help="Gateway port (0: any free port).")
    ] = DEFAULT_GATEWAY_PORT,
    host: Annotated[str, typer.Option(envvar="TICKETING_GATEWAY_HOST", help="Gateway address.")] = DEFAULT_GATEWAY_HOST,
    state_dir: StateDirOption = None,
    service_port: Annotated[
        list[str] | None,
        typer.Option(help="NAME=PORT for one service (repeatable; also TICKETING_<NAME>_PORT). Default: free ports."),
    ] = None,
    nats_port: Annotated[int, typer.Option(envvar="TICKETING_NATS_PORT", help="NATS client port (0: free).")] = 0,
    monitor_port: Annotated[
        int, typer.Option(envvar="TICKETING_NATS_MONITOR_PORT", help="NATS monitoring port (0: free).")
    ] = 0,
    postgres_port: Annotated[int, typer.Option(envvar="TICKETING_POSTGRES_PORT", help="Postgres port (0: free).")] = 0,
) -> None:
    """Start Postgres, NATS, migrations, every service and the gateway; Ctrl-C stops them all."""
    options = DevOptions(
        state_dir=_state_dir(state_dir),
        gateway_host=host,
        gateway_port=port,
        service_ports=_parse_ports(service_port or []),
        nats_port=nats_port,
        monitor_port=monitor_port,
        postgres_port=postgres_port,
    )
    try:
        code = run_dev_stack(options)
    except DevStackError as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(code)


@dev_app.command("down")
def dev_down(state_dir: StateDirOption = None) -> None:
    """Stop the running stack (signals the runner, waits until everything has stopped)."""
    directory = _state_dir(state_dir)
    try:
        pid = stop_runner(directory)
    except DevStackError as exc:
        raise _fail(str(exc)) from None
    if pid is None:
        console.print(f"no dev stack is running (state: {directory})")
    else:
        console.print(f"stopped the dev stack (pid {pid})")


@dev_app.command("status")
def dev_status(state_dir: StateDirOption = None) -> None:
    """What runs, where, and whether each service is ready; exit code 1 when the stack is down or not ready."""
    directory = _state_dir(state_dir)
    pid = running_pid(directory)
    state = read_state(directory)
    if pid is None or state is None:
        console.print(f"the dev stack is not running (state: {directory})")
        raise typer.Exit(1)
    table = Table(title=f"dev stack (pid {pid}), gateway {state.get('gateway_url')}", title_justify="left")
    for column in ("service", "url", "pid", "restarts", "ready", "docs"):
        table.add_column(column, overflow="fold")
    all_ready = True
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        for name, service in state.get("services", {}).items():
            ready = _probe(client, f"{service['url']}/readyz")
            all_ready = all_ready and ready == "ready"
            docs = "-"
            if service.get("api_prefix"):
                docs = f"{state.get('gateway_url')}{service['api_prefix']}/docs"
            elif service.get("web_path"):
                docs = f"{state.get('gateway_url')}{service['web_path']} (web client)"
            style = "green" if ready == "ready" else "red"
            table.add_row(
                name,
                service["url"],
                str(service.get("pid") or "-"),
                str(service.get("restarts", 0)),
                f"[{style}]{ready}[/{style}]",
                docs,
            )
    console.print(table)
    console.print(f"NATS {state.get('nats_url')}  monitoring {state.get('monitor_url')}")
    console.print(f"Postgres 127.0.0.1:{state.get('postgres_port')}  state {directory}")
    if not all_ready:
        raise typer.Exit(1)


def _probe(client: httpx.Client, url: str) -> str:
    try:
        response = client.get(url)
    except httpx.HTTPError:
        return "down"
    if response.status_code == 200:
        return "ready"
    with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
        return f"not ready: {response.json()['errors'][0]['message']}"
    return f"not ready ({response.status_code})"


@dev_app.command("restart")
def dev_restart(
    service: Annotated[str, typer.Argument(help="The service to restart, e.g. orders.")],
    state_dir: StateDirOption = None,
) -> None:
    """Restart one service: it is stopped gracefully and the runner starts it again."""
    import signal

    directory = _state_dir(state_dir)
    state = read_state(directory)
    if running_pid(directory) is None or state is None:
        raise _fail("the dev stack is not running")
    entry = state.get("services", {}).get(service)
    if entry is None:
        raise _fail(f"no service named {service!r}; known: {', '.join(state.get('services', {}))}")
    if not entry.get("pid"):
        raise _fail(f"{service} is not running right now (the runner is restarting it)")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(entry["pid"], signal.SIGTERM)
    console.print(f"asked {service} (pid {entry['pid']}) to stop; the runner starts it again")


@dev_app.command("reset")
def dev_reset(state_dir: StateDirOption = None) -> None:
    """Delete the stack's data (databases, streams, logs); refuses while the stack runs."""
    directory = _state_dir(state_dir)
    if running_pid(directory) is not None:
        raise _fail("the dev stack is running; stop it first (`ticketing dev down`)")
    shutil.rmtree(directory, ignore_errors=True)
    console.print(f"wiped {directory}")


# ---------------------------------------------------------------------------------------------------------------
# ticketing catalog


@app.command("catalog")
def catalog(
    check: Annotated[
        bool, typer.Option("--check", help="Change nothing; exit code 1 when a document differs from the models.")
    ] = False,
) -> None:
    """Write the event catalog (docs/asyncapi.yaml, docs/events/*.schema.json) from the event models."""
    from ticketing_dev.catalog import stale_documents, write_documents
    from ticketing_dev.repo import repo_root

    try:
        root = repo_root()
    except DevStackError as exc:
        raise _fail(str(exc)) from None
    if check:
        stale = stale_documents(root)
        if stale:
            raise _fail(f"stale event catalog: {', '.join(map(str, stale))}; run `ticketing catalog`")
        console.print("the event catalog matches the models")
        return
    changed = write_documents(root)
    console.print(f"rewrote {', '.join(map(str, changed))}" if changed else "the event catalog was up to date")


# ---------------------------------------------------------------------------------------------------------------
# ticketing broker


def _running_state() -> dict[str, Any] | None:
    with contextlib.suppress(DevStackError):
        directory = default_state_dir()
        if running_pid(directory) is not None:
            return read_state(directory)
    return None


def _check_url(url: str, schemes: tuple[str, ...], what: str) -> str:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in schemes or not parsed.hostname:
        raise CliError(f"{what} must look like {schemes[0]}://host:port, got {url!r}")
    try:
        parsed.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise CliError(f"{what} has a bad port: {url!r}") from None
    return url.rstrip("/")


def fetch_jsz(monitor: str) -> dict[str, Any]:
    """The monitoring endpoint's JetStream report, with streams, consumers and their configs."""
    url = f"{monitor}/jsz?streams=true&consumers=true&config=true"
    try:
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            response = client.get(url)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the NATS monitoring endpoint at {monitor}: {_reason(exc)}") from None
    if response.status_code != 200:
        raise CliError(f"{url} answered {response.status_code}; is this a nats-server monitoring port?")
    try:
        data: dict[str, Any] = response.json()
    except ValueError:
        raise CliError(f"{url} did not answer JSON; is this a nats-server monitoring port?") from None
    return data


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    for marker in ("Connection refused", "Connect call failed", "Name or service not known", "timed out", "No route"):
        if marker.lower() in text.lower():
            return "connection refused" if marker == "Connect call failed" else marker.lower()
    return text.splitlines()[0]


def _nkey_file() -> str | None:
    """The operator's NATS identity: TICKETING_NATS_NKEY_FILE (a seed file), else the running dev stack's."""
    return os.environ.get("TICKETING_NATS_NKEY_FILE") or (_running_state() or {}).get("nats_nkey_file")


async def _connect(url: str, timeout: float = 3.0) -> Any:
    """A NATS connection as the operator, or CliError naming why not (nats-py retries a refused first connect)."""
    import nats

    errors: list[BaseException] = []

    async def on_error(exc: BaseException) -> None:
        errors.append(exc)

    seed_file = _nkey_file()
    credentials = {"nkeys_seed": seed_file} if seed_file else {}
    try:
        return await asyncio.wait_for(
            nats.connect(
                url,
                connect_timeout=2,
                max_reconnect_attempts=0,
                allow_reconnect=False,
                error_cb=on_error,
                **credentials,
            ),
            timeout,
        )
    except Exception as exc:
        reason = _reason(errors[-1] if errors else exc)
        raise CliError(f"cannot reach NATS at {url}: {reason}") from None


async def deadletter_counts(nats_url: str) -> dict[str, int]:
    """Messages per `deadletter.<durable>` subject in the DEADLETTERS stream (the monitoring port has no such count)."""
    from nats.js.errors import NotFoundError

    nc = await _connect(nats_url)
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(DEADLETTER_STREAM, subjects_filter="deadletter.>")
        except NotFoundError:
            return {}
        subjects = info.state.subjects or {}
        return {subject.removeprefix("deadletter."): int(count) for subject, count in subjects.items()}
    finally:
        await nc.close()


def _nats_url_for(monitor: str) -> str:
    host = urllib.parse.urlparse(monitor).hostname or "127.0.0.1"
    return f"nats://{host}:4222"


def broker_tables(jsz: dict[str, Any], deadletters: dict[str, int] | None) -> tuple[Table, Table]:
    """Two tables: the streams, and their consumers with pending, ack pending, redelivered and dead letters."""
    streams = Table(title="streams", title_justify="left")
    for column in ("stream", "subjects", "messages", "bytes", "first seq", "last seq", "consumers"):
        streams.add_column(column, justify="left" if column in ("stream", "subjects") else "right", overflow="fold")
    consumers = Table(title="consumers", title_justify="left")
    for column in ("stream", "consumer", "filter", "delivered", "pending", "ack pending", "redelivered", "waiting"):
        consumers.add_column(
            column, justify="left" if column in ("stream", "consumer", "filter") else "right", overflow="fold"
        )
    consumers.add_column("dead letters", justify="right", overflow="fold")
    for account in jsz.get("account_details", []) or []:
        for stream in sorted(account.get("stream_detail", []) or [], key=lambda s: s.get("name", "")):
            state = stream.get("state", {})
            config = stream.get("config", {})
            streams.add_row(
                Text(_printable(stream.get("name", "?"))),
                Text(_printable(", ".join(config.get("subjects", []) or []))),
                str(state.get("messages", 0)),
                str(state.get("bytes", 0)),
                str(state.get("first_seq", 0)),
                str(state.get("last_seq", 0)),
                str(state.get("consumer_count", 0)),
            )
            for consumer in sorted(stream.get("consumer_detail", []) or [], key=lambda c: c.get("name", "")):
                name = consumer.get("name", "?")
                ccfg = consumer.get("config", {})
                filters = ccfg.get("filter_subjects") or [ccfg.get("filter_subject") or ">"]
                dead = "?" if deadletters is None else str(deadletters.get(name, 0))
                consumers.add_row(
                    Text(_printable(stream.get("name", "?"))),
                    Text(_printable(name)),
                    Text(_printable(", ".join(filters))),
                    str(consumer.get("delivered", {}).get("stream_seq", 0)),
                    str(consumer.get("num_pending", 0)),
                    str(consumer.get("num_ack_pending", 0)),
                    str(consumer.get("num_redelivered", 0)),
                    str(consumer.get("num_waiting", 0)),
                    Text(dead, style="" if dead in ("0", "?") else "red"),
                )
    return streams, consumers


@app.command("broker")
def broker(
    monitor: Annotated[
        str | None,
        typer.Option(
            "--monitor",
            "-m",
            envvar="TICKETING_NATS_MONITOR",
            help="NATS monitoring URL. Default: the running dev stack's, else http://127.0.0.1:8222.",
            show_default=False,
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            "-s",
            envvar="TICKETING_NATS_URL",
            help="NATS client URL, for the dead-letter counts. Default: the dev stack's, else port 4222 of the "
            "monitor's host.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Streams and consumers: messages, pending, ack pending, redelivered, dead letters."""
    state = _running_state() if monitor is None or server is None else None
    try:
        monitor_url = _check_url(
            monitor or (state or {}).get("monitor_url") or DEFAULT_MONITOR_URL, ("http", "https"), "--monitor"
        )
        nats_url = _check_url(
            server or (state or {}).get("nats_url") or _nats_url_for(monitor_url), ("nats", "tls"), "--server"
        )
        jsz = fetch_jsz(monitor_url)
    except CliError as exc:
        raise _fail(str(exc)) from None
    deadletters: dict[str, int] | None
    note = ""
    try:
        deadletters = asyncio.run(asyncio.wait_for(deadletter_counts(nats_url), 5))
    except CliError as exc:  # the table is still useful without the dead-letter column
        deadletters = None
        note = f"dead letters unknown: {exc}; pass --server"
    except Exception as exc:
        deadletters = None
        note = f"dead letters unknown: {_reason(exc)}"
    streams, consumers = broker_tables(jsz, deadletters)
    console.print(f"NATS monitoring {monitor_url}   server {jsz.get('server_id', '?')[:12]}   {jsz.get('now', '')}")
    console.print(streams)
    console.print(consumers)
    if note:
        err.print(Text(_printable(note), style="yellow"), soft_wrap=True)


# ---------------------------------------------------------------------------------------------------------------
# ticketing events tail


def _stream_subjects(subject: str | None) -> list[tuple[str, str]]:
    """(stream, filter subject) pairs to follow: one subject, or every catalog subject."""
    if subject is None:
        return [(stream, filt) for stream, subjects in STREAMS.items() for filt in subjects]
    prefix = subject.split(".", 1)[0]
    for stream, subjects in STREAMS.items():
        if any(s.split(".", 1)[0] in (prefix, ">", "*") for s in subjects):
            return [(stream, subject)]
    raise CliError(f"no stream holds {subject!r}; the catalog's subjects are {', '.join(_catalog())}")


def _catalog() -> list[str]:
    return [s for subjects in STREAMS.values() for s in subjects]


def format_event(subject: str, data: bytes, headers: dict[str, str] | None, sequence: int, stamp: datetime) -> Text:
    """One event for humans: time, stream sequence, subject, ids, and the indented JSON payload.

    Everything in an event came from someone else (a title is any user's text), so it is styled as plain Text, never
    parsed as Rich markup, and control characters are shown escaped rather than sent to the operator's terminal.
    """
    try:
        body = json.dumps(json.loads(data), indent=2, ensure_ascii=False)
    except ValueError:
        body = data.decode(errors="replace")
    headers = headers or {}
    ids = "  ".join(
        f"{label}={headers[key]}"
        for key, label in (("Nats-Msg-Id", "id"), ("X-Request-ID", "request"))
        if key in headers
    )
    when = stamp.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return Text.assemble(
        (when, "dim"),
        f" #{sequence} ",
        (_printable(subject), "bold cyan"),
        "  ",
        (_printable(ids), "dim"),
        "\n",
        _printable(body, keep="\n"),
    )


def _printable(text: str, keep: str = "") -> str:
    """`text` with every control character (C0, DEL and C1, such as ESC and CSI) escaped as `\\xNN`."""
    return "".join(
        ch if ch in keep or unicodedata.category(ch) != "Cc" else ch.encode("unicode_escape").decode() for ch in text
    )


async def tail_events(
    nats_url: str,
    subject: str | None,
    *,
    from_start: bool,
    count: int | None,
    idle_timeout: float | None,
    emit: Callable[[Text], None],
) -> int:
    """Follow events with ephemeral ordered consumers (never a durable, so the services' consumers are untouched)."""
    from nats.js.api import DeliverPolicy
    from nats.js.errors import NotFoundError

    pairs = _stream_subjects(subject)
    nc = await _connect(nats_url)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    seen = 0
    try:
        js = nc.jetstream()
        subscribed = 0
        for stream, filt in pairs:
            try:
                await js.stream_info(stream)
            except NotFoundError:
                continue
            await js.subscribe(
                filt,
                stream=stream,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.ALL if from_start else DeliverPolicy.NEW,
                cb=queue.put,
                manual_ack=True,
            )
            subscribed += 1
        if subscribed == 0:
            raise CliError("no catalog stream exists yet on this server; start the services first")
        while count is None or seen < count:
            try:
                msg = await asyncio.wait_for(queue.get(), timeout=idle_timeout)
            except TimeoutError:
                break
            meta = msg.metadata
            emit(format_event(msg.subject, msg.data, msg.headers, meta.sequence.stream, meta.timestamp))
            seen += 1
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
    return seen


@events_app.command("tail")
def events_tail(
    subject: Annotated[
        str | None,
        typer.Argument(help="A subject or wildcard (order.created, ticket.>); default: every catalog subject."),
    ] = None,
    from_start: Annotated[bool, typer.Option("--from-start", help="Replay what the streams hold first.")] = False,
    server: ServerOption = None,
    count: Annotated[int | None, typer.Option("--count", "-n", min=1, help="Stop after N events.")] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0.1, help="Stop after this many seconds without an event.")
    ] = None,
) -> None:
    """Follow live events, pretty-printed (Ctrl-C to stop)."""
    try:
        url = _nats_url(server)
        _stream_subjects(subject)
    except CliError as exc:
        raise _fail(str(exc)) from None

    def emit(text: Text) -> None:
        console.print(text, soft_wrap=True)

    try:
        asyncio.run(tail_events(url, subject, from_start=from_start, count=count, idle_timeout=timeout, emit=emit))
    except KeyboardInterrupt:
        return
    except CliError as exc:
        raise _fail(f"cannot follow events: {exc}") from None
    except Exception as exc:
        raise _fail(f"cannot follow events on {url}: {_reason(exc)}") from None


# ---------------------------------------------------------------------------------------------------------------
# ticketing events publish


def typed_event(subject: str, body: str, event_id: str | None) -> Event:
    """The body parsed as the subject's event, as a service builds it; CliError naming each bad field."""
    from pydantic import ValidationError

    event_type = EVENT_TYPES.get(subject)
    if event_type is None:
        raise CliError(f"{subject!r} is not in the event catalog; its subjects are {', '.join(EVENT_TYPES)}")
    try:
        identity = uuid.UUID(event_id) if event_id else uuid.uuid4()
    except ValueError:
        raise CliError(f"--id must be a UUID, got {event_id!r}") from None
    try:
        return event_type.model_validate_json(body).model_copy(update={"event_id": identity})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'body'}: {error['msg']}" for error in exc.errors(include_url=False)
        )
        raise CliError(f"not a valid {subject}: {problems}") from None


async def publish_event(nats_url: str, event: Event, request_id: str) -> tuple[str, int, bool]:
    """Publish one event with its headers and wait for JetStream's ack: (stream, sequence, was it a duplicate)."""
    import nats.errors
    from nats.js.errors import NoStreamResponseError

    nc = await _connect(nats_url)
    try:
        headers = {"Nats-Msg-Id": str(event.event_id), "X-Request-ID": request_id}
        try:
            ack = await nc.jetstream().publish(event.subject, event.to_bytes(), headers=headers, timeout=5)
        except NoStreamResponseError:
            raise CliError(f"no stream holds {event.subject} on {nats_url} yet; start the services first") from None
        except nats.errors.Error as exc:  # a permissions violation included, once the bus checks who speaks
            raise CliError(f"NATS refused the event: {_reason(exc)}") from None
        return ack.stream, ack.seq, bool(ack.duplicate)
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


@events_app.command("publish")
def events_publish(
    subject: Annotated[str, typer.Argument(help="A catalog subject, e.g. ticket.created.")],
    body: Annotated[str, typer.Argument(help="The payload JSON, camelCase as on the wire; `-` reads stdin.")],
    event_id: Annotated[
        str | None, typer.Option("--id", help="The event's id (Nats-Msg-Id). Default: a new UUID.", show_default=False)
    ] = None,
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="X-Request-ID. Default: a new cli-… id.", show_default=False)
    ] = None,
    server: ServerOption = None,
) -> None:
    """Publish one event, checked and serialized by the catalog's model exactly as a service publishes it."""
    from ticketing_common.requestid import accept_request_id

    try:
        url = _nats_url(server)
        event = typed_event(subject, sys.stdin.read() if body == "-" else body, event_id)
        if request_id is not None and accept_request_id(request_id) != request_id:
            raise CliError("--request-id may hold 1-128 letters, digits and ._:/+=-")
        stream, sequence, duplicate = asyncio.run(
            publish_event(url, event, request_id or f"cli-{uuid.uuid4().hex[:16]}")
        )
    except CliError as exc:
        raise _fail(str(exc)) from None
    except Exception as exc:
        raise _fail(f"cannot publish on {url}: {_reason(exc)}") from None
    if duplicate:
        console.print(f"{subject} {event.event_id}: JetStream already holds this id; nothing was stored")
        return
    console.print(f"published {subject} {event.event_id} as {stream} #{sequence}")


# ---------------------------------------------------------------------------------------------------------------
# ticketing deadletters

ServiceArgument = Annotated[str, typer.Argument(help="The consuming service: tickets, orders, payments, expiration.")]
DeadLetterIdArgument = Annotated[int, typer.Argument(help="The dead letter's id (from `ticketing deadletters list`).")]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="TICKETING_DATABASE_URL",
        help="The service's database (postgresql://...). Default: the running dev stack's.",
        show_default=False,
    ),
]
OperatorOption = Annotated[
    str | None,
    typer.Option("--by", help="Who acts, recorded with the dead letter. Default: your login name.", show_default=False),
]


def _service_database(service: str, url: str | None) -> str:
    """The service's database URL: --database-url, else the dev stack's database named after the service."""
    from ticketing_dev.deadletters import check_service

    check_service(service)
    if url:
        return url if "+asyncpg://" in url else "postgresql+asyncpg://" + url.split("://", 1)[-1]
    state = _running_state()
    if not state or not state.get("postgres_port"):
        raise CliError("no dev stack is running; pass --database-url for the service's database")
    return f"postgresql+asyncpg://postgres@127.0.0.1:{state['postgres_port']}/{service}"


def _operator(value: str | None) -> str:
    import getpass

    with contextlib.suppress(Exception):
        return value or getpass.getuser()
    return "unknown"


def _run_deadletters(action: Callable[[], Any]) -> Any:
    from ticketing_dev.deadletters import DeadLetterError

    try:
        return asyncio.run(action())
    except (DeadLetterError, CliError) as exc:
        raise _fail(str(exc)) from None


@deadletters_app.command("list")
def deadletters_list(
    service: Annotated[str | None, typer.Argument(help="One service; default: every consuming service.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include those already retried or dropped.")] = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """The dead letters waiting for an operator: id, consumer, subject, deliveries, when, and why."""
    from ticketing_dev.deadletters import CONSUMING_SERVICES, list_dead_letters

    services = [service] if service else CONSUMING_SERVICES
    if database_url and not service:
        raise _fail("--database-url names one service's database; name the service too")
    table = Table(title="dead letters", title_justify="left")
    for column in ("service", "id", "consumer", "subject", "deliveries", "created", "status", "reason"):
        table.add_column(column, overflow="fold", justify="right" if column in ("id", "deliveries") else "left")

    async def collect() -> int:
        found = 0
        for name in services:
            for row in await list_dead_letters(name, _service_database(name, database_url), include_resolved=all_):
                found += 1
                status = f"{row.resolution} by {row.resolved_by}" if row.resolution else "waiting"
                table.add_row(
                    name,
                    str(row.id),
                    Text(_printable(row.consumer)),
                    Text(_printable(row.subject)),
                    str(row.deliveries),
                    row.created_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                    Text(_printable(status)),
                    Text(_printable(row.reason[:200])),
                )
        return found

    if _run_deadletters(collect) == 0:
        console.print("no dead letters" + ("" if all_ else " waiting"))
        return
    console.print(table)


@deadletters_app.command("show")
def deadletters_show(
    service: ServiceArgument, dead_letter_id: DeadLetterIdArgument, database_url: DatabaseUrlOption = None
) -> None:
    """One dead letter in full: its headers, payload, reason, and how it was resolved."""
    from ticketing_dev.deadletters import get_dead_letter

    row = _run_deadletters(lambda: get_dead_letter(service, _service_database(service, database_url), dead_letter_id))
    fields = {
        "service": service,
        "id": row.id,
        "consumer": row.consumer,
        "subject": row.subject,
        "message id": row.message_id,
        "stream sequence": row.stream_sequence,
        "deliveries": row.deliveries,
        "created": row.created_at.isoformat(),
        "reason": row.reason,
        "status": row.resolution or "waiting",
        "resolved": row.resolved_at.isoformat() if row.resolved_at else None,
        "by": row.resolved_by,
        "note": row.resolution_note,
        "headers": json.dumps(row.headers, ensure_ascii=False),
    }
    for label, value in fields.items():
        if value is not None:
            console.print(Text.assemble((f"{label}: ", "bold"), _printable(str(value))), soft_wrap=True)
    console.print(format_event(row.subject, row.payload, row.headers, row.stream_sequence or 0, row.created_at))


@deadletters_app.command("retry")
def deadletters_retry(
    service: ServiceArgument,
    dead_letter_id: DeadLetterIdArgument,
    note: Annotated[str, typer.Option("--note", help="Why, recorded with the dead letter.")] = "",
    by: OperatorOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Apply the event through its consumer's handler, once, in version order; if it fails, nothing changes."""
    from ticketing_dev.deadletters import retry_dead_letter

    done = _run_deadletters(
        lambda: retry_dead_letter(
            service, _service_database(service, database_url), dead_letter_id, operator=_operator(by), note=note
        )
    )
    console.print(Text(_printable(done)))


@deadletters_app.command("drop")
def deadletters_drop(
    service: ServiceArgument,
    dead_letter_id: DeadLetterIdArgument,
    reason: Annotated[str, typer.Option("--reason", help="Why it is dropped (required), recorded with it.")],
    by: OperatorOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Give up on the event for good, recording who dropped it and why."""
    from ticketing_dev.deadletters import drop_dead_letter

    if not reason.strip():
        raise _fail("--reason must say why")
    operator = _operator(by)
    _run_deadletters(
        lambda: drop_dead_letter(
            service, _service_database(service, database_url), dead_letter_id, operator=operator, reason=reason
        )
    )
    console.print(f"dropped dead letter {dead_letter_id} of {service} (by {_printable(operator)})")


# ---------------------------------------------------------------------------------------------------------------
# ticketing replay


@app.command("replay")
def replay(
    service: ServiceArgument,
    database_url: DatabaseUrlOption = None,
    server: ServerOption = None,
) -> None:
    """Rebuild the service's replicas from the start of the streams and swap them in, while it keeps running."""
    from ticketing_dev.deadletters import DeadLetterError
    from ticketing_dev.replay import ReplayError, replay_service

    async def run() -> Any:
        url = _service_database(service, database_url)
        nats_url = _nats_url(server)
        nc = await _connect(nats_url)
        try:
            return await replay_service(service, url, nc.jetstream(), note=lambda line: console.print(line))
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    try:
        report = asyncio.run(run())
    except (CliError, DeadLetterError, ReplayError) as exc:
        raise _fail(str(exc)) from None
    rows = ", ".join(f"{table}: {count} rows" for table, count in report.rows.items())
    console.print(f"replayed {report.applied} events into {service} ({report.duplicates} duplicates); {rows}")
    for line in report.skipped:
        err.print(Text(_printable(f"skipped, as its live consumer would have: {line}"), style="yellow"), soft_wrap=True)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["app", "main"]
