"""The event bus against the real servers: outbox, relay, idempotent listeners, versions and dead letters."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from nats.js.api import ConsumerConfig
from sqlalchemy import func, select, text

from busapp import Handled, Replica, TicketCreatedListener, create_app, replica_rows
from ticketing_common.db import DeadLetter, OutboxEvent
from ticketing_common.events import TicketCreated, TicketUpdated
from ticketing_common.settings import ServiceSettings
from ticketing_testing import eventually, parked
from ticketing_testing.plugin import RunningService, Servers, ServiceStarter, provision_service


def ticket_created(**overrides: object) -> TicketCreated:
    values: dict[str, object] = {"id": uuid.uuid4(), "version": 0, "title": "t", "price": 10, "user_id": uuid.uuid4()}
    values.update(overrides)
    return TicketCreated(**values)  # type: ignore[arg-type]


def ticket_updated(created: TicketCreated, version: int, title: str) -> TicketUpdated:
    return TicketUpdated(
        id=created.id, version=version, title=title, price=created.price, user_id=created.user_id, order_id=None
    )


async def publish(js, event, msg_id: str | None = None) -> None:
    await js.publish(event.subject, event.to_bytes(), headers={"Nats-Msg-Id": msg_id or str(event.event_id)})


async def stream_messages(js, stream: str) -> int:
    return (await js.stream_info(stream)).state.messages


async def count(service: RunningService, model) -> int:
    async with service.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_a_committed_event_is_published_once_with_its_id_as_msg_id(probe: RunningService, events) -> None:
    response = await probe.client.post("/api/probe/ok", headers={"X-Request-ID": "req-outbox-1"})
    assert response.status_code == 201
    [body] = await events.wait_for("ticket.created")
    assert body["id"] == response.json()["id"]
    assert set(body) == {"id", "version", "title", "price", "userId"}
    [captured] = [e for e in events.events if e.subject == "ticket.created"]
    assert captured.headers["Nats-Msg-Id"] == response.json()["eventId"]
    assert captured.headers["X-Request-ID"] == "req-outbox-1"

    async def marked_sent() -> bool:
        async with probe.sessionmaker() as session:
            row = await session.get(OutboxEvent, uuid.UUID(response.json()["eventId"]))
            return row is not None and row.sent_at is not None

    await eventually(marked_sent)
    # The service's own listener handles it under the same request id.
    listener = next(li for li in probe.runtime.listeners if isinstance(li, TicketCreatedListener))
    await eventually(lambda: _equals(_async(listener.request_ids), ["req-outbox-1"]))


async def _async(value):
    return value


async def test_a_rolled_back_change_publishes_nothing(probe: RunningService) -> None:
    failed = await probe.client.post("/api/probe/fail")
    assert failed.status_code == 500
    assert failed.json() == {"errors": [{"message": "Something went wrong"}]}
    assert "rolled back on purpose" not in failed.text
    ok = await probe.client.post("/api/probe/ok")
    assert ok.status_code == 201
    js = probe.runtime.bus.js
    await eventually(lambda: _equals(stream_messages(js, "TICKETS"), 1))
    assert await count(probe, OutboxEvent) == 1
    msg = await js.get_last_msg("TICKETS", "ticket.created")
    assert json.loads(msg.data)["id"] == ok.json()["id"]


async def _equals(awaitable, expected) -> bool:
    value = await awaitable
    assert value == expected, f"{value} != {expected}"
    return True


async def test_an_event_committed_while_nats_is_down_is_published_when_it_is_back(
    probe: RunningService, clean_state
) -> None:
    nats_server = clean_state.nats
    nats_server.stop()
    try:
        response = await probe.client.post("/api/probe/ok")
        assert response.status_code == 201
        await asyncio.sleep(0.5)  # the relay tries and fails meanwhile
        async with probe.sessionmaker() as session:
            row = await session.get(OutboxEvent, uuid.UUID(response.json()["eventId"]))
            assert row is not None and row.sent_at is None
    finally:
        nats_server.start()
    js = probe.runtime.bus.js
    await eventually(lambda: _equals(stream_messages(js, "TICKETS"), 1), timeout=20)
    msg = await js.get_last_msg("TICKETS", "ticket.created")
    assert msg.headers["Nats-Msg-Id"] == response.json()["eventId"]
    # ...and it reaches the service's own listener, once.
    await eventually(lambda: _equals(count(probe, Replica), 1), timeout=20)


async def test_a_redelivered_event_is_handled_once(probe: RunningService, nats_client) -> None:
    js = nats_client.jetstream()
    # A tiny duplicate window lets the same Nats-Msg-Id be stored twice, as a redelivery after a lost ack would be.
    await js.update_stream(name="TICKETS", subjects=["ticket.>"], duplicate_window=0.1)
    event = ticket_created()
    await publish(js, event)
    await eventually(lambda: _equals(count(probe, Replica), 1))
    await asyncio.sleep(0.2)
    await publish(js, event)
    assert await stream_messages(js, "TICKETS") == 2
    # A third, distinct event proves the listener went past the duplicate before we look.
    later = ticket_created(title="zz-later")
    await publish(js, later)
    await eventually(lambda: _equals(count(probe, Replica), 2))
    async with probe.sessionmaker() as session:
        handled = await session.get(Handled, f"{event.id}:0")
    assert handled is not None and handled.count == 1


async def test_a_duplicate_publish_is_dropped_by_jetstream(probe: RunningService, nats_client) -> None:
    js = nats_client.jetstream()
    event = ticket_created()
    await publish(js, event)
    await publish(js, event)
    assert await stream_messages(js, "TICKETS") == 1


async def test_an_out_of_order_version_is_parked_then_applied_in_order(probe: RunningService, nats_client) -> None:
    js = nats_client.jetstream()
    created = ticket_created(title="v0")
    await publish(js, ticket_updated(created, 2, "v2"))
    await publish(js, ticket_updated(created, 1, "v1"))
    # Seen, set aside and acked (not merely not delivered yet), without holding the consumer.
    assert await parked(js, probe.runtime.database, "TICKETS", "probe-ticket-updated", count=2) == 2
    assert await count(probe, Replica) == 0  # nothing applies before version 0
    await publish(js, created)

    async def at_version_2() -> bool:
        rows = await replica_rows(probe)
        return len(rows) == 1 and rows[0].version == 2

    await eventually(at_version_2)
    [row] = await replica_rows(probe)
    assert row.title == "v2"
    assert row.applied == 3  # v0, then v1, then v2: each applied exactly once, in order
    assert await probe.runtime.database.pool.fetchval("SELECT count(*) FROM parked_events") == 0


async def test_an_old_version_is_acked_and_ignored(probe: RunningService, nats_client) -> None:
    js = nats_client.jetstream()
    created = ticket_created(title="v0")
    await publish(js, created)
    await publish(js, ticket_updated(created, 1, "v1"))
    await eventually(lambda: _version_is(probe, 1))
    stale = ticket_updated(created, 1, "stale copy")
    await publish(js, stale)
    marker = ticket_created(title="zz-marker")
    await publish(js, marker)
    await eventually(lambda: _equals(count(probe, Replica), 2))
    rows = {r.title: r for r in await replica_rows(probe)}
    assert rows["v1"].version == 1
    info = await js.consumer_info("TICKETS", "probe-ticket-updated")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def _version_is(service: RunningService, version: int) -> bool:
    rows = await replica_rows(service)
    return bool(rows) and rows[0].version == version


async def test_two_replicas_bound_to_one_durable_split_the_work_without_doubles(
    start_service: ServiceStarter, nats_client
) -> None:
    first = await start_service(create_app, ServiceSettings, "busapp", nats_client_id="replica-1")
    second = await start_service(create_app, ServiceSettings, "busapp", nats_client_id="replica-2")
    js = nats_client.jetstream()
    for i in range(300):
        await publish(js, ticket_created(title=f"t{i:03d}"))
    await eventually(lambda: _equals(count(first, Replica), 300), timeout=30)
    listeners = [
        next(li for li in service.runtime.listeners if isinstance(li, TicketCreatedListener))
        for service in (first, second)
    ]
    handled = [li.handled for li in listeners]
    assert sum(handled) == 300
    assert all(h > 0 for h in handled), handled
    async with first.sessionmaker() as session:
        doubles = (await session.execute(select(func.count()).where(Handled.count != 1))).scalar_one()
    assert doubles == 0


async def test_a_failing_handler_is_dead_lettered_after_max_deliver_and_the_service_goes_on(
    probe: RunningService, nats_client
) -> None:
    js = nats_client.jetstream()
    created = ticket_created(title="v0")
    await publish(js, created)
    await publish(js, ticket_updated(created, 1, "explode"))

    async def dead_lettered() -> list[DeadLetter]:
        async with probe.sessionmaker() as session:
            return list((await session.execute(select(DeadLetter))).scalars())

    [letter] = await eventually(dead_lettered, timeout=20)
    assert letter.consumer == "probe-ticket-updated"
    assert letter.deliveries == 6
    assert "always fails" in letter.reason
    # Still consuming: the next event applies.
    await publish(js, ticket_updated(created, 1, "v1 again"))
    await eventually(lambda: _version_is(probe, 1))
    # And the dead letter is announced on the bus for operators.
    msg = await eventually(lambda: _last(js, "deadletter.probe-ticket-updated"), timeout=10)
    assert json.loads(msg.data)["consumer"] == "probe-ticket-updated"


async def _last(js, subject: str):
    try:
        return await js.get_last_msg("DEADLETTERS", subject)
    except Exception as exc:  # not there yet
        raise AssertionError(str(exc)) from exc


async def test_an_invalid_payload_is_dead_lettered_at_once(probe: RunningService, nats_client) -> None:
    js = nats_client.jetstream()
    await js.publish("ticket.created", b'{"id": "not a uuid"}', headers={"Nats-Msg-Id": "bad-1"})
    await js.publish("ticket.created", b"not json at all", headers={"Nats-Msg-Id": "bad-2"})
    good = ticket_created()
    await publish(js, good)
    await eventually(lambda: _equals(count(probe, Replica), 1))
    await eventually(lambda: _equals(count(probe, DeadLetter), 2))
    async with probe.sessionmaker() as session:
        letters = list((await session.execute(select(DeadLetter).order_by(DeadLetter.id))).scalars())
    assert [d.message_id for d in letters] == ["bad-1", "bad-2"]
    assert all(d.deliveries == 1 and d.reason.startswith("invalid payload") for d in letters)


async def test_an_existing_consumer_is_updated_to_the_declared_config(probe: RunningService, servers: Servers) -> None:
    js = probe.runtime.bus.js
    await js.add_consumer(
        "TICKETS",
        ConsumerConfig(
            name="probe-ticket-created",
            durable_name="probe-ticket-created",
            filter_subject="ticket.created",
            ack_wait=5,
            max_deliver=3,
        ),
    )
    listener = next(li for li in probe.runtime.listeners if isinstance(li, TicketCreatedListener))
    await provision_service(servers, probe.app.state.spec, probe.settings)  # as the provisioner, as a deploy does
    info = await js.consumer_info("TICKETS", "probe-ticket-created")
    assert info.config.ack_wait == listener.ack_wait
    assert info.config.max_deliver == -1  # unlimited: the listener counts deliveries itself (outages do not count)
    assert info.config.max_ack_pending == listener.max_ack_pending


async def test_the_relay_is_woken_by_notify_not_by_polling(start_service: ServiceStarter, events) -> None:
    probe = await start_service(create_app, ServiceSettings, "busapp", outbox_poll_seconds=60)
    await asyncio.sleep(0.3)  # let the LISTEN connection settle
    response = await probe.client.post("/api/probe/ok")
    assert response.status_code == 201
    # With a 60 s poll, only the NOTIFY at commit can publish this within the wait.
    await events.wait_for("ticket.created", timeout=10)


async def test_outbox_rows_are_claimed_with_skip_locked(probe: RunningService) -> None:
    probe.runtime.relay._stopping = True  # keep this replica's relay out of the way
    await probe.runtime.relay.stop()
    for _ in range(3):
        await probe.client.post("/api/probe/ok")
    engine = probe.runtime.database.engine
    async with engine.connect() as holder:
        await holder.execute(
            text("SELECT id FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED")
        )
        # A second relay skips the locked row and publishes the other two.
        from ticketing_common.outbox import OutboxRelay

        other = OutboxRelay(engine=engine, pool=probe.runtime.database.pool, js=probe.runtime.bus.js)
        assert await other.publish_pending() == 2
        await holder.rollback()
    assert await other.publish_pending() == 1


async def test_driver_connection_statements_belong_to_the_session_transaction(probe: RunningService) -> None:
    from ticketing_common.db import driver_connection

    async with probe.sessionmaker() as session:
        conn = await driver_connection(session)
        await conn.execute("INSERT INTO inbox (consumer, message_id) VALUES ('c', 'rolled-back')")
        await session.rollback()
    async with probe.sessionmaker() as session, session.begin():
        conn = await driver_connection(session)
        await conn.execute("INSERT INTO inbox (consumer, message_id) VALUES ('c', 'committed')")
    async with probe.sessionmaker() as session:
        ids = (await session.execute(text("SELECT message_id FROM inbox WHERE consumer = 'c'"))).scalars().all()
    assert ids == ["committed"]


async def test_settings_can_shorten_every_listeners_ack_wait(start_service: ServiceStarter) -> None:
    probe = await start_service(create_app, ServiceSettings, "busapp", nats_ack_wait_seconds=3)
    for listener in probe.runtime.listeners:
        info = await probe.runtime.bus.js.consumer_info(listener.stream, listener.durable)
        assert info.config.ack_wait == 3


async def test_staged_events_are_written_at_commit_and_dropped_on_rollback(probe: RunningService) -> None:
    database = probe.runtime.database
    woken: list[str] = []

    async def rolled_back() -> None:
        async with database.transaction() as uow:
            uow.enqueue(ticket_created(title="dropped"))
            uow.after_commit(lambda: woken.append("dropped"))
            await uow.session.execute(text("SELECT 1"))
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        await rolled_back()
    async with database.transaction() as uow:
        uow.enqueue(ticket_created(title="kept-1"))
        uow.enqueue(ticket_created(title="kept-2"))
        uow.after_commit(lambda: woken.append("kept"))
        assert woken == []  # not before the commit
    assert woken == ["kept"]
    async with probe.sessionmaker() as session:
        payloads = (await session.execute(text("SELECT payload FROM outbox ORDER BY seq"))).scalars().all()
    assert [json.loads(p)["title"] for p in payloads] == ["kept-1", "kept-2"]


async def test_the_relay_prunes_sent_rows_and_old_inbox_records_past_their_retention(
    start_service: ServiceStarter,
) -> None:
    probe = await start_service(create_app, ServiceSettings, "busapp", outbox_retention_seconds=60)
    relay = probe.runtime.relay
    assert relay.retention_seconds == 60
    relay._stopping = True  # its own start-up prune has run or is gone; only the explicit one below counts
    await relay.stop()
    async with probe.runtime.database.pool.acquire() as conn:
        await conn.execute("TRUNCATE outbox, inbox")
        await conn.execute(
            "INSERT INTO outbox (id, subject, payload, created_at, sent_at) VALUES "
            "($1, 's', '', now() - interval '2 hours', now() - interval '61 seconds'),"  # sent, past retention
            "($2, 's', '', now() - interval '2 hours', now() - interval '59 seconds'),"  # sent, within it
            "($3, 's', '', now() - interval '2 hours', NULL)",  # never sent: kept however old
            *(uuid.UUID(int=i) for i in (1, 2, 3)),
        )
        await conn.execute(
            "INSERT INTO inbox (consumer, message_id, processed_at) VALUES "
            "('c', 'old', now() - interval '421 seconds'), ('c', 'recent', now() - interval '419 seconds')"
        )
        assert await relay.prune() == 2
        outbox = await conn.fetch("SELECT id FROM outbox ORDER BY id")
        inbox = await conn.fetch("SELECT message_id FROM inbox")
    assert [r["id"] for r in outbox] == [uuid.UUID(int=2), uuid.UUID(int=3)]
    assert [r["message_id"] for r in inbox] == ["recent"]


async def test_the_relay_prunes_on_its_own_in_the_background(probe: RunningService) -> None:
    relay = probe.runtime.relay
    assert [t.get_name() for t in relay._tasks] == ["outbox-relay", "outbox-listen", "outbox-prune"]
    async with probe.runtime.database.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO outbox (id, subject, payload, sent_at) VALUES ($1, 's', '', now() - interval '2 days')",
            uuid.UUID(int=7),
        )
    # A fresh relay prunes when it starts (then hourly): the row past the default 24 h retention goes.
    from ticketing_common.outbox import OutboxRelay

    other = OutboxRelay(engine=probe.runtime.database.engine, pool=probe.runtime.database.pool, js=probe.runtime.bus.js)
    await other.start()
    try:

        async def pruned() -> bool:
            async with probe.runtime.database.pool.acquire() as conn:
                return await conn.fetchval("SELECT count(*) FROM outbox WHERE id = $1", uuid.UUID(int=7)) == 0

        await eventually(pruned)
    finally:
        await other.stop()
