"""The streams keep every event unless told otherwise, and replay refuses a stream that lost its first events."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import asyncpg
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import RetentionPolicy
from typer.testing import CliRunner

from ticketing_common import bus
from ticketing_common.db import asyncpg_dsn
from ticketing_common.events import STREAMS, TicketCreated
from ticketing_dev import cli
from ticketing_testing.plugin import Servers

# The command connects to the bus as the operator.
pytestmark = pytest.mark.usefixtures("operator_identity")


async def test_every_stream_keeps_the_full_history_and_a_hand_set_limit_is_undone_at_start(nats_client: NATS) -> None:
    js = nats_client.jetstream()
    for name in STREAMS:
        config = (await js.stream_info(name)).config
        assert config.retention == RetentionPolicy.LIMITS
        assert not config.max_age
        assert (config.max_msgs, config.max_bytes, config.max_msgs_per_subject) == (-1, -1, -1)

    limited = (await js.stream_info("TICKETS")).config
    limited.max_age = 600
    await js.update_stream(limited)
    assert (await js.stream_info("TICKETS")).config.max_age == 600
    await bus.ensure_streams(js)
    assert not (await js.stream_info("TICKETS")).config.max_age

    await bus.ensure_streams(js, max_age=3600)
    assert (await js.stream_info("TICKETS")).config.max_age == 3600
    await bus.ensure_streams(js)


async def test_replay_refuses_a_stream_whose_first_events_are_gone_and_changes_nothing(
    clean_state: Servers, nats_client: NATS
) -> None:
    js = nats_client.jetstream()

    async def listed() -> None:
        event = TicketCreated(id=uuid.uuid4(), version=0, title="t", price=Decimal(5), user_id=uuid.uuid4())
        await js.publish(event.subject, event.to_bytes(), headers={"Nats-Msg-Id": str(event.event_id)})

    await listed()
    await js.purge_stream("TICKETS")
    await listed()
    url = clean_state.database("ticketing_orders")
    argv = ["replay", "orders", "--database-url", url, "--server", clean_state.nats.url]
    result = await asyncio.to_thread(CliRunner().invoke, cli.app, argv)
    assert result.exit_code == 1
    assert "no longer starts at its first event" in " ".join(result.output.split())
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        assert await conn.fetchval("SELECT count(*) FROM tickets") == 0
        assert await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'replay_%'") == 0
    finally:
        await conn.close()
