"""The `ticketing` command against a real nats-server: broker tables, event tail, and one-line errors."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig
from rich.console import Console
from typer.testing import CliRunner, Result

from ticketing_dev import cli, runner
from ticketing_dev.servers import free_port
from ticketing_testing.plugin import Servers

# The command connects to the bus as the operator.
pytestmark = pytest.mark.usefixtures("operator_identity")


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables wide enough that consumer names are never cut."""
    monkeypatch.setattr(cli, "console", Console(width=250, highlight=False, no_color=True))
    monkeypatch.setattr(cli, "err", Console(width=250, highlight=False, no_color=True, stderr=True))


async def invoke(*args: str) -> Result:
    """Run the command in a thread: it runs its own event loop."""
    return await asyncio.to_thread(CliRunner().invoke, cli.app, list(args))


async def publish(nats_client: NATS, subject: str, body: dict[str, object], msg_id: str) -> None:
    await nats_client.jetstream().publish(
        subject, json.dumps(body).encode(), headers={"Nats-Msg-Id": msg_id, "X-Request-ID": f"req-{msg_id}"}
    )


async def test_broker_lists_streams_consumers_and_dead_letters_per_consumer(
    nats_client: NATS, clean_state: Servers
) -> None:
    js = nats_client.jetstream()
    config = ConsumerConfig(
        durable_name="orders-ticket-created", filter_subject="ticket.created", ack_policy=AckPolicy.EXPLICIT
    )
    await js.add_consumer("TICKETS", config)
    for n in range(2):
        await publish(nats_client, "ticket.created", {"id": str(n)}, f"t{n}")
    for n in range(3):
        await publish(nats_client, "deadletter.orders-ticket-created", {"consumer": "orders-ticket-created"}, f"d{n}")

    result = await invoke("broker", "--monitor", clean_state.nats.monitor_url, "--server", clean_state.nats.url)

    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "orders-ticket-created" in line)
    cells = [cell.strip() for cell in row.split("│") if cell.strip()]
    # stream, consumer, filter, delivered, pending, ack pending, redelivered, waiting, dead letters
    assert cells[:3] == ["TICKETS", "orders-ticket-created", "ticket.created"]
    assert cells[4] == "2"
    assert cells[-1] == "3"
    assert "DEADLETTERS" in result.output and "ORDERS" in result.output


async def test_broker_still_shows_the_tables_when_only_the_monitoring_port_is_reachable(
    nats_client: NATS, clean_state: Servers
) -> None:
    result = await invoke(
        "broker", "--monitor", clean_state.nats.monitor_url, "--server", f"nats://127.0.0.1:{free_port()}"
    )

    assert result.exit_code == 0
    assert "TICKETS" in result.output
    assert "dead letters unknown: cannot reach NATS" in result.output


async def test_broker_gives_one_line_and_exit_1_when_the_monitor_is_unreachable() -> None:
    result = await invoke("broker", "--monitor", f"http://127.0.0.1:{free_port()}")

    assert result.exit_code == 1
    assert "cannot reach the NATS monitoring endpoint" in result.output
    assert "connection refused" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


async def test_broker_rejects_a_malformed_url_in_one_line() -> None:
    result = await invoke("broker", "--monitor", "localhost:8222")

    assert result.exit_code == 1
    assert "--monitor must look like http://host:port" in result.output
    assert "Traceback" not in result.output


async def test_events_tail_replays_from_the_start_pretty_printed(nats_client: NATS, clean_state: Servers) -> None:
    await publish(nats_client, "ticket.created", {"id": "t1", "title": "Concert", "price": 20}, "m1")
    await publish(nats_client, "order.created", {"id": "o1", "status": "created"}, "m2")

    result = await invoke(
        "events", "tail", "--from-start", "--count", "2", "--timeout", "5", "-s", clean_state.nats.url
    )

    assert result.exit_code == 0, result.output
    assert "ticket.created" in result.output and "order.created" in result.output
    assert '"title": "Concert"' in result.output
    assert "id=m1" in result.output and "request=req-m1" in result.output


async def test_events_tail_follows_one_subject_without_creating_a_durable(
    nats_client: NATS, clean_state: Servers
) -> None:
    await publish(nats_client, "ticket.created", {"id": "t1"}, "a1")
    await publish(nats_client, "ticket.updated", {"id": "t1", "version": 1}, "a2")

    result = await invoke("events", "tail", "ticket.updated", "--from-start", "-n", "1", "-s", clean_state.nats.url)

    assert result.exit_code == 0, result.output
    assert "ticket.updated" in result.output and "ticket.created" not in result.output
    consumers = await nats_client.jetstream().consumers_info("TICKETS")
    assert [c.config.durable_name for c in consumers if c.config.durable_name] == []


async def test_events_tail_stops_after_the_idle_timeout_when_nothing_happens(
    nats_client: NATS, clean_state: Servers
) -> None:
    result = await invoke("events", "tail", "--timeout", "0.3", "-s", clean_state.nats.url)

    assert result.exit_code == 0
    assert result.output == ""


async def test_events_tail_gives_one_line_and_exit_1_when_nats_is_unreachable() -> None:
    result = await invoke("events", "tail", "-s", f"nats://127.0.0.1:{free_port()}")

    assert result.exit_code == 1
    assert result.output.startswith("error: cannot follow events: cannot reach NATS at nats://127.0.0.1:")
    assert "connection refused" in result.output
    assert "Traceback" not in result.output


async def test_events_tail_refuses_a_subject_no_stream_holds(clean_state: Servers) -> None:
    result = await invoke("events", "tail", "payroll.paid", "-s", clean_state.nats.url)

    assert result.exit_code == 1
    assert "no stream holds 'payroll.paid'" in result.output


async def test_dev_status_and_down_say_when_no_stack_runs(tmp_path: Path) -> None:
    status = await invoke("dev", "status", "--state-dir", str(tmp_path))
    down = await invoke("dev", "down", "--state-dir", str(tmp_path))

    assert status.exit_code == 1 and "not running" in status.output
    assert down.exit_code == 0 and "no dev stack is running" in down.output


async def test_dev_up_rejects_a_malformed_service_port(tmp_path: Path) -> None:
    result = await invoke("dev", "up", "--state-dir", str(tmp_path), "--service-port", "auth:80")

    assert result.exit_code == 1
    assert "--service-port wants NAME=PORT" in result.output


async def test_events_tail_prints_user_text_as_plain_text(nats_client: NATS, clean_state: Servers) -> None:
    """A title is anyone's text: Rich markup in it is neither an error nor a style, and escapes never reach a tty."""
    titles = ["[/]", "[bold red]x[/bold red]", "\x1b[2J\x9b31m"]
    for n, title in enumerate(titles):
        await publish(nats_client, "ticket.created", {"id": f"t{n}", "title": title, "price": 1}, f"mk{n}")

    result = await invoke("events", "tail", "--from-start", "-n", "3", "--timeout", "5", "-s", clean_state.nats.url)

    assert result.exit_code == 0, result.output
    assert '"title": "[/]"' in result.output
    assert '"title": "[bold red]x[/bold red]"' in result.output
    assert "\x1b" not in result.output and "\x9b" not in result.output
    assert '"title": "\\u001b[2J\\x9b31m"' in result.output


def test_format_event_escapes_control_characters_in_headers() -> None:
    text = cli.format_event("ticket.created", b"{}", {"Nats-Msg-Id": "a\x1b[31mb\nforged"}, 7, datetime.now(UTC))

    assert "\x1b" not in text.plain and "\\x1b" in text.plain
    assert text.plain.splitlines()[1:] == ["{}"]  # the header line, then the body: no forged line


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "ticketing.example"])
async def test_dev_up_refuses_the_committed_key_on_a_non_loopback_address(
    host: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("JWT_KEY", raising=False)

    result = await invoke("dev", "up", "--host", host, "--port", "0", "--state-dir", str(tmp_path))

    assert result.exit_code == 1
    assert "set JWT_KEY" in result.output
    assert not (tmp_path / "pg").exists()  # refused before anything started


@pytest.mark.parametrize(
    ("host", "key"), [("127.0.0.1", None), ("::1", None), ("localhost", None), ("0.0.0.0", "k" * 40)]
)
def test_the_committed_key_is_fine_on_loopback_or_when_jwt_key_is_set(host: str, key: str | None) -> None:
    runner.check_session_key(host, {"JWT_KEY": key} if key else {})


async def test_events_tail_without_an_identity_is_refused_in_one_line(
    clean_state: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TICKETING_NATS_NKEY_FILE")
    result = await invoke("events", "tail", "--timeout", "0.3", "-s", clean_state.nats.url)
    assert result.exit_code == 1
    assert "authorization violation" in result.output.lower()
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
