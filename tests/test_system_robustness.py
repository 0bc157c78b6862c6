"""A service killed outright in the middle of a flow is restarted by the runner, and no event is lost or doubled."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import nats
from nats.js.api import DeliverPolicy
from systemkit import Stack, eventually, needs, signup


async def _stream_events(state: dict[str, Any], subject: str) -> list[tuple[str, dict[str, Any], str]]:
    """Every event the stream holds on a subject: (subject, payload, Nats-Msg-Id), read with an ephemeral consumer."""
    nc = await nats.connect(state["nats_url"], nkeys_seed=state["nats_nkey_file"])  # the operator
    found: list[tuple[str, dict[str, Any], str]] = []
    try:
        js = nc.jetstream()
        sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        while True:
            try:
                msg = await sub.next_msg(timeout=1)
            except TimeoutError:
                break
            found.append((msg.subject, json.loads(msg.data), (msg.headers or {}).get("Nats-Msg-Id", "")))
    finally:
        await nc.close()
    return found


def stream_events(stack: Stack, subject: str) -> list[tuple[str, dict[str, Any], str]]:
    return asyncio.run(_stream_events(stack.state(), subject))


def consumers_settled(stack: Stack, *durables: str) -> bool:
    """The durables (default: all) have handled everything: nothing pending, nothing awaiting an ack."""
    jsz = httpx.get(f"{stack.state()['monitor_url']}/jsz?streams=true&consumers=true", trust_env=False).json()
    consumers = [c for a in jsz["account_details"] for s in a["stream_detail"] for c in s.get("consumer_detail", [])]
    if durables:
        consumers = [c for c in consumers if c["name"] in durables]
    return bool(consumers) and all(c["num_pending"] == 0 and c["num_ack_pending"] == 0 for c in consumers)


@needs("tickets", "orders")
def test_a_killed_service_is_restarted_and_the_flow_completes_with_every_event_handled_once(stack: Stack) -> None:
    seller, _ = signup(stack)
    buyer, _ = signup(stack)
    ticket = seller.post("/api/tickets", json={"title": "Before the crash", "price": 12}).json()

    # orders dies without a goodbye once it holds the ticket; the ticket changes while it is down, so orders must
    # catch up on restart from its durable consumer.
    eventually(lambda: consumers_settled(stack, "orders-ticket-created"))
    orders_pid = stack.kill("orders")
    updated = seller.put(f"/api/tickets/{ticket['id']}", json={"title": "While orders was down", "price": 15})
    assert updated.status_code == 200, updated.text
    stack.wait_restarted("orders", orders_pid)

    def ordered() -> httpx.Response | None:
        response = buyer.post("/api/orders", json={"ticketId": ticket["id"]})
        # Until orders has applied ticket.updated it still knows version 0; wait for the version it must catch up to.
        return response if response.status_code == 201 and response.json()["ticket"]["version"] == 1 else None

    order = eventually(ordered).json()
    assert order["ticket"]["title"] == "While orders was down"
    assert order["ticket"]["price"] == 15

    # tickets dies right after the order, maybe while handling order.created: the event is delivered again after the
    # restart (at once if it was never fetched, after the consumer's ack_wait of 30 s if it was in hand) and applied
    # exactly once.
    tickets_pid = stack.kill("tickets")
    stack.wait_restarted("tickets", tickets_pid)
    reserved = eventually(lambda: (t := seller.get(f"/api/tickets/{ticket['id']}").json())["orderId"] and t, timeout=45)
    assert reserved["orderId"] == order["id"]
    assert reserved["version"] == 2
    refused = seller.put(f"/api/tickets/{ticket['id']}", json={"title": "Sneaky", "price": 1})
    assert refused.status_code == 400

    eventually(lambda: consumers_settled(stack), timeout=45)
    ticket_events = [(s, e["version"]) for s, e, _ in stream_events(stack, "ticket.>") if e["id"] == ticket["id"]]
    assert ticket_events == [("ticket.created", 0), ("ticket.updated", 1), ("ticket.updated", 2)]
    order_events = [s for s, e, _ in stream_events(stack, "order.>") if e["id"] == order["id"]]
    assert order_events == ["order.created"]
    assert stream_events(stack, "deadletter.>") == []
    assert stack.state()["services"]["orders"]["restarts"] == 1
    assert stack.state()["services"]["tickets"]["restarts"] == 1
