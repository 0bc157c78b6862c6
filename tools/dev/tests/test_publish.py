"""`ticketing events publish`: one event through the catalog's model, onto the real broker, with its headers."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from nats.aio.client import Client as NATS
from rich.console import Console
from typer.testing import CliRunner, Result

from ticketing_common.events import OrderCreated
from ticketing_dev import cli
from ticketing_testing.plugin import Servers

# The command connects to the bus as the operator.
pytestmark = pytest.mark.usefixtures("operator_identity")


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines long enough that no message is cut."""
    monkeypatch.setattr(cli, "console", Console(width=300, highlight=False, no_color=True))
    monkeypatch.setattr(cli, "err", Console(width=300, highlight=False, no_color=True, stderr=True))


async def publish(servers: Servers, *args: str) -> Result:
    argv = ["events", "publish", *args, "--server", servers.nats.url]
    return await asyncio.to_thread(CliRunner().invoke, cli.app, argv)


async def stored(nats_client: NATS, subject: str) -> list[tuple[bytes, dict[str, str]]]:
    """What the stream holds on a subject, through an ephemeral ordered consumer."""
    js = nats_client.jetstream()
    info = await js.stream_info("ORDERS", subjects_filter=subject)
    count = (info.state.subjects or {}).get(subject, 0)
    found: list[tuple[bytes, dict[str, str]]] = []
    if count:
        sub = await js.subscribe(subject, ordered_consumer=True, manual_ack=True)
        for _ in range(count):
            msg = await sub.next_msg(timeout=5)
            found.append((msg.data, dict(msg.headers or {})))
        await sub.unsubscribe()
    return found


ORDER = {
    "id": "7d4c6f7e-55c2-4c61-9d3b-1c1a3e3b1a01",
    "version": 0,
    "status": "created",
    "userId": "0c5c1d7e-2f0b-4d7e-8a39-9f6b0c1d2e03",
    "expiresAt": "2030-01-01T12:00:00+01:00",
    "ticket": {"id": "4b1f0e4e-8a2e-4f7e-9a3c-5b7d9e1f2a04", "price": 12.5},
    "ignored": "by the model, as a service ignores it",
}


async def test_publishes_the_typed_event_with_its_id_and_request_id(clean_state: Servers, nats_client: NATS) -> None:
    event_id = str(uuid.uuid4())
    result = await publish(
        clean_state, "order.created", json.dumps(ORDER), "--id", event_id, "--request-id", "by-hand-1"
    )
    assert result.exit_code == 0, result.output
    assert f"published order.created {event_id} as ORDERS #1" in result.output

    [(body, headers)] = await stored(nats_client, "order.created")
    assert headers["Nats-Msg-Id"] == event_id
    assert headers["X-Request-ID"] == "by-hand-1"
    # Exactly what a service would write: the model's wire form (UTC with Z, no unknown field), not the text given.
    assert json.loads(body) == json.loads(OrderCreated.model_validate(ORDER).to_bytes())
    assert json.loads(body)["expiresAt"] == "2030-01-01T11:00:00.000Z"

    again = await publish(clean_state, "order.created", json.dumps(ORDER), "--id", event_id)
    assert again.exit_code == 0
    assert "already holds this id" in again.output
    assert len(await stored(nats_client, "order.created")) == 1


async def test_refuses_an_invalid_payload_an_unknown_subject_and_a_bad_id_and_publishes_nothing(
    clean_state: Servers, nats_client: NATS
) -> None:
    broken = {**ORDER, "status": "shipped"}
    del broken["userId"]
    invalid = await publish(clean_state, "order.created", json.dumps(broken))
    assert invalid.exit_code == 1
    assert "not a valid order.created" in invalid.output
    assert "userId" in invalid.output
    assert "status" in invalid.output
    assert "Traceback" not in invalid.output

    unknown = await publish(clean_state, "order.shipped", "{}")
    assert unknown.exit_code == 1
    assert "not in the event catalog" in unknown.output
    not_json = await publish(clean_state, "order.created", "{nope")
    assert not_json.exit_code == 1
    bad_id = await publish(clean_state, "order.created", json.dumps(ORDER), "--id", "42")
    assert bad_id.exit_code == 1
    assert "--id must be a UUID" in bad_id.output
    bad_request = await publish(clean_state, "order.created", json.dumps(ORDER), "--request-id", "a b\x1b")
    assert bad_request.exit_code == 1
    assert await stored(nats_client, "order.created") == []


async def test_a_publish_the_bus_forbids_to_its_identity_is_refused_and_nothing_is_stored(
    clean_state: Servers, nats_client: NATS, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With tickets' own key, order.created is another service's event: the broker refuses it, and the command says so.
    seeds = clean_state.nats_auth.write_seeds(tmp_path / "other-keys")
    monkeypatch.setenv("TICKETING_NATS_NKEY_FILE", str(seeds["tickets"]))
    result = await publish(clean_state, "order.created", json.dumps(ORDER))
    assert result.exit_code == 1, result.output
    assert "refused" in result.output.lower() or "permission" in result.output.lower(), result.output
    assert "Traceback" not in result.output
    assert await stored(nats_client, "order.created") == []
