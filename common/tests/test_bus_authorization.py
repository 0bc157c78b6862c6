"""Who may speak on the bus: the cluster's nats.conf, enforced by the test broker (issue 15, item 2)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, StreamConfig

from ticketing_common.events import EVENT_TYPES, stream_for
from ticketing_testing import eventually
from ticketing_testing.plugin import Servers

# The contract's catalog: who publishes each event.
PUBLISHERS = {
    "ticket.created": "tickets",
    "ticket.updated": "tickets",
    "order.created": "orders",
    "order.cancelled": "orders",
    "expiration.complete": "expiration",
    "payment.created": "payments",
}
SERVICES = ("auth", "tickets", "orders", "expiration", "payments")


class Speaker:
    """A connection under one identity that remembers the server's permission errors."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: NATS | None = None

    async def on_error(self, exc: Exception) -> None:
        self.errors.append(str(exc))

    def refused(self, subject: str) -> bool:
        # nats-py lowercases the server's -ERR line.
        return any("permissions violation" in e and f'"{subject.lower()}"' in e for e in self.errors)


@pytest.fixture
async def speak(clean_state: Servers) -> AsyncIterator[object]:
    opened: list[NATS] = []

    async def connect(identity: str) -> Speaker:
        speaker = Speaker()
        speaker.nc = await clean_state.connect_nats(identity, error_cb=speaker.on_error)
        opened.append(speaker.nc)
        return speaker

    yield connect
    for nc in opened:
        await nc.close()


async def stored(nats_client: NATS, subject: str) -> int:
    info = await nats_client.jetstream().stream_info(stream_for(subject), subjects_filter=subject)
    return int((info.state.subjects or {}).get(subject, 0))


def test_the_table_is_the_event_catalog() -> None:
    assert set(PUBLISHERS) == set(EVENT_TYPES)


async def test_an_anonymous_client_is_refused(clean_state: Servers) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(clean_state.nats.url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)


async def test_a_client_with_an_unknown_key_is_refused(clean_state: Servers) -> None:
    from ticketing_dev.natsauth import new_seed

    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(
            clean_state.nats.url,
            nkeys_seed_str=new_seed(),
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=2,
        )


@pytest.mark.parametrize("subject", sorted(PUBLISHERS))
async def test_only_its_publisher_may_publish_an_event(subject: str, speak, nats_client: NATS) -> None:
    body = json.dumps({"id": str(uuid.uuid4()), "version": 0}).encode()
    for identity in SERVICES:
        if identity == PUBLISHERS[subject]:
            continue
        speaker = await speak(identity)
        await speaker.nc.publish(subject, body, headers={"Nats-Msg-Id": str(uuid.uuid4())})
        await speaker.nc.flush()
        # The server answers a refused publish with -ERR before it reads anything more from that connection.
        await eventually(lambda s=speaker: _true(s.refused(subject)))
    assert await stored(nats_client, subject) == 0
    owner = await speak(PUBLISHERS[subject])
    ack = await owner.nc.jetstream().publish(subject, body, headers={"Nats-Msg-Id": str(uuid.uuid4())})
    assert ack.stream == stream_for(subject)
    assert await stored(nats_client, subject) == 1


async def _true(value: bool) -> bool:
    assert value
    return True


async def test_a_forged_payment_created_never_reaches_the_stream(speak, nats_client: NATS) -> None:
    forged = {"id": str(uuid.uuid4()), "orderId": str(uuid.uuid4()), "stripeId": "nothing-charged"}
    orders = await speak("orders")
    with pytest.raises(nats.errors.TimeoutError):
        await orders.nc.jetstream().publish("payment.created", json.dumps(forged).encode(), timeout=1)
    assert orders.refused("payment.created")
    assert await stored(nats_client, "payment.created") == 0


async def test_a_service_may_not_create_consumers_or_change_streams(speak, nats_client: NATS) -> None:
    # A consumer's deliver subject makes JetStream publish on the creator's behalf: orders could have its own
    # order.created (any body it likes) delivered to payment.created. Only the provisioner creates consumers.
    orders = await speak("orders")
    js = orders.nc.jetstream(timeout=1)
    with pytest.raises(nats.errors.TimeoutError):
        await js.add_consumer(
            "ORDERS", ConsumerConfig(durable_name="orders-order-created", deliver_subject="payment.created")
        )
    with pytest.raises(nats.errors.TimeoutError):
        await js.update_stream(StreamConfig(name="PAYMENTS", subjects=["payment.>", "order.forged"]))
    with pytest.raises(nats.errors.TimeoutError):
        await js.delete_stream("PAYMENTS")
    assert orders.refused("$JS.API.STREAM.UPDATE.PAYMENTS") and orders.refused("$JS.API.STREAM.DELETE.PAYMENTS")
    assert (await nats_client.jetstream().stream_info("PAYMENTS")).config.subjects == ["payment.>"]
    assert await nats_client.jetstream().consumers_info("ORDERS") == []


async def test_a_service_reads_only_its_own_inbox(speak) -> None:
    orders = await speak("orders")
    await orders.nc.subscribe("payment.created")
    await orders.nc.subscribe("_INBOX_payments.>")
    await orders.nc.flush()
    await eventually(lambda: _true(orders.refused("payment.created") and orders.refused("_INBOX_payments.>")))


async def test_a_service_may_not_ack_another_services_messages(speak, nats_client: NATS) -> None:
    # Acking (or terminating) someone else's delivery would drop an event before its consumer handled it.
    tickets = await speak("tickets")
    subject = "$JS.ACK.TICKETS.orders-ticket-created.1.1.1.0.0"
    await tickets.nc.publish(subject, b"+TERM")
    await tickets.nc.flush()
    await eventually(lambda: _true(tickets.refused(subject)))
