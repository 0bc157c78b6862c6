"""Chaos: hundreds of orders through the gateway while every service is SIGKILLed once and Postgres and NATS restart.

The workload is a mix a shop sees: tickets created (some edited), ordered, paid, declined, cancelled (some re-ordered
by someone else), or left to expire. Meanwhile each service is killed outright once (the runner restarts it), NATS is
restarted and Postgres is killed (the runner brings both back). Clients retry what failed because something was down,
as a browser's user would; a retried request that had in fact succeeded must not do anything twice.

Once everything is quiet (every durable consumer caught up, every outbox drained, every order expired or finished),
the test reads every service's database and every stream directly and checks that the services agree on each order
and ticket, that every committed event reached its stream once and was handled once by each consumer, and that
nothing was charged, cancelled or reserved twice. It asserts invariants, never timings.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import pytest
from nats.js.api import DeliverPolicy
from systemkit import Stack, eventually, needs

from ticketing_payments.providers import FakeLedger, charges_per_key

SERVICES = ("auth", "tickets", "orders", "payments", "expiration")
STREAMS = ("TICKETS", "ORDERS", "EXPIRATION", "PAYMENTS", "DEADLETTERS")
MIN_FLOWS = 200  # each flow places at least one order
MAX_FLOWS = 360
FLOW_SPACING = 0.1  # seconds between flow starts: the workload spans the whole chaos schedule
CHAOS_PAUSE = 2.0  # seconds of workload between two faults, after the previous one has recovered
CONCURRENCY = 12  # requests in flight at once
REQUEST_DEADLINE = 60.0  # how long one request is retried while something it needs is down
# What a client may retry, and only while a fault is on (and a short grace after it): a 500 is a bug, a 404 an answer.
RETRY_STATUSES = {502, 503, 504}
FAULT_GRACE = 5.0  # seconds after a fault has recovered that its effects (a replica catching up) may still show
# Agreement: every service agrees this long after the workload (and the last fault) ended, plus the reservations
# still open then, which end with the expiration window (the figure).
EXPIRATION_SECONDS = 5
AGREE_WITHIN = 5.0 + EXPIRATION_SECONDS
# The contract's "consumed by" column (expiration may also consume order.cancelled, to drop the job).
REQUIRED_CONSUMERS = {
    "orders-ticket-created",
    "orders-ticket-updated",
    "orders-expiration-complete",
    "orders-payment-created",
    "tickets-order-created",
    "tickets-order-cancelled",
    "payments-order-created",
    "payments-order-cancelled",
    "expiration-order-created",
}
# Modes cycle by flow number; "reorder" cancels, then a second buyer orders the freed ticket and pays.
MODES = ("pay", "expire", "cancel", "pay", "decline", "reorder", "pay", "expire", "cancel", "edit-pay")


@pytest.fixture(scope="module")
def provider_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake provider's ledger (Stripe's side of every charge), in a file this test owns: the payments process
    that chaos kills writes to it, and it outlives that process, as Stripe's records would."""
    return tmp_path_factory.mktemp("provider") / "fake-provider-ledger.sqlite3"


@pytest.fixture(scope="module")
def stack_env(provider_ledger: Path) -> dict[str, str]:
    # Short reservations so every order reaches a final state within the test; a short ack_wait so an event a killed
    # service had fetched but not acked comes back in seconds rather than the default 30. A few buyers share hundreds
    # of flows, so the per-user cap on open orders (tested in orders) is lifted here.
    return {
        "ORDER_EXPIRATION_SECONDS": str(EXPIRATION_SECONDS),
        "NATS_ACK_WAIT_SECONDS": "5",
        "LOG_LEVEL": "WARNING",
        "MAX_OPEN_ORDERS": "1000",
        "FAKE_PROVIDER_LEDGER": str(provider_ledger),
        # A charge whose payment row died with a killed payments process or database, and whose buyer's retry came
        # too late (the order expired): the reconciler records it within a second or two here, not 30 s.
        "CHARGE_RECONCILE_SECONDS": "1",
    }


@pytest.fixture(autouse=True)
def keep_the_log(stack: Stack) -> Iterator[None]:
    """CHAOS_LOG=path keeps the whole interleaved log of the run (the report shows only its tail)."""
    yield
    if path := os.environ.get("CHAOS_LOG"):
        Path(path).write_text(stack.log())


# ---------------------------------------------------------------------------------------------------------------
# The clients: bounded concurrency, retries while a service is down


class Client:
    """HTTP clients on the gateway shared by every user (each request carries its Bearer token), with retries."""

    def __init__(self, url: str) -> None:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        self.http = httpx.AsyncClient(base_url=url, timeout=10.0, trust_env=False, limits=limits)
        # Sign-ups and sign-ins get their own client: the session cookies they set must never ride along on another
        # user's request (a cookie wins over the Bearer header).
        self.auth_http = httpx.AsyncClient(base_url=url, timeout=10.0, trust_env=False, limits=limits)
        self.gate = asyncio.Semaphore(CONCURRENCY)
        self.retries: Counter[str] = Counter()
        self.requests = 0
        self.faults_on = 0  # faults in progress (set by the chaos task)
        self.fault_log: list[tuple[str, float]] = []  # (fault, when it struck)
        self.fault_over_at = float("-inf")
        self.bad_5xx: list[str] = []  # every 5xx that was not a 503 with Retry-After
        self.outside_fault: list[str] = []  # failures met while no fault was on: nothing may excuse those
        self.missing_404: list[str] = []  # a 404 for an entity that exists: never allowed

    def in_fault_window(self) -> bool:
        return self.faults_on > 0 or time.monotonic() - self.fault_over_at <= FAULT_GRACE

    async def call(
        self, method: str, path: str, *, token: str | None = None, body: Any = None, producer: str | None = None
    ) -> httpx.Response:
        """Send until the answer is not "retry shortly": a 503 with Retry-After (or a gateway 502/504) during a fault,
        or a 503 "not yet known" at any time (the contract asks clients to retry it; replicas lag a little even
        without faults). Anything else is the answer, a 404 included; but a 404 for the entity the flow itself has
        just made (its `producer` named) is a lie and fails the run: the entity exists, perhaps only in its
        producer's outbox so far, and a replica must say "not yet known" until its event arrives."""
        deadline = time.monotonic() + REQUEST_DEADLINE
        while True:
            delay = 0.2
            request_id = uuid.uuid4().hex
            headers = {"X-Request-ID": request_id}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            try:
                async with self.gate:
                    self.requests += 1
                    http = self.auth_http if path.startswith("/api/users") else self.http
                    response = await http.request(method, path, json=body, headers=headers)
            except httpx.TransportError as exc:
                reason = type(exc).__name__
                if not self.in_fault_window():
                    self.outside_fault.append(f"{method} {path}: {reason} with no fault on")
                    raise
            else:
                # A response meant for another request would be the worst kind of chaos bug: check every one.
                assert response.headers.get("x-request-id") == request_id, (
                    f"{method} {path}: sent request id {request_id}, got the response for {response.headers}"
                    f" {response.status_code} {response.text[:300]}"
                )
                status = response.status_code
                if status >= 500:
                    retry_after = response.headers.get("retry-after")
                    message = response.text[:200]
                    if status != 503 or not retry_after:
                        self.bad_5xx.append(f"{method} {path}: {status} Retry-After={retry_after} {message}")
                    # A replica that is behind says so, at any time: "not yet known", or tickets holding back an
                    # edit while an order event is on its way (a race with the orders of this very run).
                    held = status == 503 and "may be held by an order" in message
                    not_yet = status == 503 and ("Not yet known" in message or held)
                    reason = (
                        ("503 edit held for an order" if held else "503 not yet known")
                        if not_yet
                        else f"{status} {message.split(':', 1)[-1][:40]}"
                    )
                    if status not in RETRY_STATUSES or not (not_yet or self.in_fault_window()):
                        self.outside_fault.append(f"{method} {path}: {status} {message} with no fault on")
                        return response
                    if retry_after and retry_after.isdigit():
                        delay = min(float(retry_after), 1.0)
                elif status == 404 and producer:
                    self.missing_404.append(f"{method} {path} {body}: 404 for an entity {producer} has committed")
                    raise AssertionError(self.missing_404[-1])
                else:
                    return response
            self.retries[reason] += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"{method} {path} still failing after {REQUEST_DEADLINE:.0f}s: {reason}")
            await asyncio.sleep(delay)


@dataclass
class Outcomes:
    """What the clients were told; the databases must agree with it afterwards."""

    placed: dict[str, str] = field(default_factory=dict)  # order id -> ticket id
    paid: set[str] = field(default_factory=set)
    declined: set[str] = field(default_factory=set)
    cancelled: set[str] = field(default_factory=set)
    late: set[str] = field(default_factory=set)  # a payment refused because the order had expired meanwhile
    modes: Counter[str] = field(default_factory=Counter)


async def signup(client: Client) -> str:
    """A new user's token; a retried signup that had succeeded meets "Email in use" and signs in instead."""
    email = f"chaos-{uuid.uuid4().hex[:12]}@example.com"
    credentials = {"email": email, "password": "correct horse battery"}
    response = await client.call("POST", "/api/users/signup", body=credentials)
    if response.status_code == 400 and "Email in use" in response.text:
        response = await client.call("POST", "/api/users/signin", body=credentials)
    assert response.status_code in (200, 201), response.text
    token = response.cookies.get("session")
    assert token, "no session cookie"
    return token


async def place_order(client: Client, token: str, ticket_id: str) -> dict[str, Any]:
    """Order a ticket; a retry whose first attempt got through finds that order in the buyer's list.

    That first order may have expired while the retries waited out an outage (reservations last 5 s here), between
    the retry's "already reserved" and the list: then the ticket is free again and the buyer orders it anew.
    """
    for _ in range(5):
        response = await client.call(
            "POST", "/api/orders", token=token, body={"ticketId": ticket_id}, producer="tickets"
        )
        if response.status_code == 201:
            order: dict[str, Any] = response.json()
            return order
        assert response.status_code == 400 and "Ticket is already reserved" in response.text, response.text
        mine = await client.call("GET", "/api/orders?limit=100", token=token)
        assert mine.status_code == 200, mine.text
        for_ticket = [o for o in mine.json() if o["ticket"]["id"] == ticket_id]
        held = [o for o in for_ticket if o["status"] != "cancelled"]
        if held:
            return held[0]  # type: ignore[no-any-return]
        assert for_ticket, f"ticket {ticket_id} is reserved, but not by this buyer's retried order"
    raise AssertionError(f"ticket {ticket_id}: this buyer's orders kept expiring before it could order again")


async def pay(client: Client, token: str, order_id: str, card: str, seen: Outcomes) -> None:
    response = await client.call(
        "POST", "/api/payments", token=token, body={"token": card, "orderId": order_id}, producer="orders"
    )
    if response.status_code == 201 or (response.status_code == 400 and "Order already paid" in response.text):
        seen.paid.add(order_id)
    elif response.status_code == 402:
        seen.declined.add(order_id)
    elif response.status_code == 400 and ("expired" in response.text or "cancelled order" in response.text):
        seen.late.add(order_id)  # an outage outlasted the reservation: it expires instead
    else:
        raise AssertionError(f"payment for {order_id}: {response.status_code} {response.text}")


async def cancel(client: Client, token: str, order_id: str, seen: Outcomes) -> None:
    response = await client.call("DELETE", f"/api/orders/{order_id}", token=token)
    assert response.status_code == 204, response.text
    seen.cancelled.add(order_id)


async def flow(number: int, client: Client, seller: str, buyers: list[str], seen: Outcomes) -> None:
    """One customer story, chosen by the flow number."""
    mode = MODES[number % len(MODES)]
    seen.modes[mode] += 1
    if number % 25 == 0:
        buyers.append(await signup(client))  # sign-ups keep going while auth is killed
    buyer = buyers[number % len(buyers)]
    created = await client.call(
        "POST", "/api/tickets", token=seller, body={"title": f"Chaos #{number}", "price": 10 + number % 90}
    )
    assert created.status_code == 201, created.text
    ticket_id = created.json()["id"]
    if mode == "edit-pay":
        edited = await client.call(
            "PUT", f"/api/tickets/{ticket_id}", token=seller, body={"title": f"Chaos #{number} (moved)", "price": 99}
        )
        assert edited.status_code == 200, edited.text
    order = await place_order(client, buyer, ticket_id)
    seen.placed[order["id"]] = ticket_id
    if mode in ("pay", "edit-pay"):
        await pay(client, buyer, order["id"], "tok_visa", seen)
    elif mode == "decline":
        await pay(client, buyer, order["id"], "tok_chargeDeclined", seen)
    elif mode == "cancel":
        await cancel(client, buyer, order["id"], seen)
    elif mode == "reorder":
        await cancel(client, buyer, order["id"], seen)
        second = buyers[(number + 1) % len(buyers)]
        again = await place_order(client, second, ticket_id)
        seen.placed[again["id"]] = ticket_id
        await pay(client, second, again["id"], "tok_visa", seen)


# ---------------------------------------------------------------------------------------------------------------
# The faults


def recovered(stack: Stack, name: str, wait: Any) -> None:
    """Run a wait for `name` to come back; if it times out, say what the runner and `name` last said."""
    try:
        wait()
    except AssertionError as exc:
        lines = [line for line in stack.log().splitlines() if line.startswith(f"{name} ")][-30:]
        state = stack.state().get("services", {}).get(name) or {k: v for k, v in stack.state().items() if name in k}
        raise AssertionError(
            f"{name} did not come back: {exc}; state {state}; its last lines:\n" + "\n".join(lines)
        ) from exc


def restart_server(stack: Stack, name: str, sig: signal.Signals) -> None:
    """Signal Postgres' postmaster or nats-server by its pid and wait until the runner has started it again."""
    state = stack.state()
    before = int(state.get(f"{name}_restarts", 0))
    pid = state[f"{name}_pid"]
    assert pid, f"{name} has no pid in stack.json"
    os.kill(int(pid), sig)
    recovered(stack, name, lambda: eventually(lambda: stack.state().get(f"{name}_restarts", 0) > before, timeout=60))


def kill_service(stack: Stack, name: str) -> None:
    """SIGKILL a service's process group and wait until the runner has it ready again."""
    pid = stack.kill(name, signal.SIGKILL)
    recovered(stack, name, lambda: stack.wait_restarted(name, pid, timeout=60))


async def chaos(stack: Stack, done: asyncio.Event, faults: list[str], client: Client) -> None:
    """One fault at a time, each after the previous one has recovered and the workload ran on for a while."""
    plan: list[tuple[str, Any]] = [
        ("SIGKILL tickets", lambda: kill_service(stack, "tickets")),
        # A restart (SIGTERM): what JetStream promises for a broker killed outright depends on its file store's sync
        # settings, not on this suite. (SIGKILL passed too in trials.)
        ("restart nats", lambda: restart_server(stack, "nats", signal.SIGTERM)),
        ("SIGKILL orders", lambda: kill_service(stack, "orders")),
        ("SIGKILL payments", lambda: kill_service(stack, "payments")),
        # SIGKILL of the postmaster: Postgres is crash-safe (fsync and synchronous commit are on in the dev stack).
        ("SIGKILL postgres", lambda: restart_server(stack, "postgres", signal.SIGKILL)),
        ("SIGKILL expiration", lambda: kill_service(stack, "expiration")),
        ("SIGKILL auth", lambda: kill_service(stack, "auth")),
    ]
    try:
        for name, fault in plan:
            await asyncio.sleep(CHAOS_PAUSE)
            client.faults_on += 1
            client.fault_log.append((name, time.monotonic()))
            try:
                await asyncio.to_thread(fault)
            finally:
                client.faults_on -= 1
                client.fault_over_at = time.monotonic()
            faults.append(name)
        await asyncio.sleep(CHAOS_PAUSE)
    finally:
        done.set()


# ---------------------------------------------------------------------------------------------------------------
# Reading the truth: databases and streams


def pg_url(stack: Stack, database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{stack.state()['postgres_port']}/{database}"


async def fetch(stack: Stack, database: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(pg_url(stack, database))
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


@dataclass
class Message:
    seq: int
    subject: str
    data: dict[str, Any]
    msg_id: str
    stored_at: float = 0.0  # when the stream stored it (the server's clock, seconds since the epoch)


async def read_streams(stack: Stack) -> dict[str, list[Message]]:
    """Every message of every stream, in order, read with ephemeral ordered consumers."""
    state = stack.state()
    nc = await nats.connect(state["nats_url"], nkeys_seed=state["nats_nkey_file"])  # the operator
    found: dict[str, list[Message]] = {}
    try:
        js = nc.jetstream()
        for stream in STREAMS:
            info = await js.stream_info(stream)
            found[stream] = []
            if not info.state.messages:
                continue
            sub = await js.subscribe(
                info.config.subjects[0], stream=stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
            )
            while True:
                msg = await sub.next_msg(timeout=5)
                found[stream].append(
                    Message(
                        msg.metadata.sequence.stream,
                        msg.subject,
                        json.loads(msg.data),
                        (msg.headers or {}).get("Nats-Msg-Id", ""),
                        msg.metadata.timestamp.timestamp(),
                    )
                )
                if msg.metadata.sequence.stream >= info.state.last_seq:
                    break
            await sub.unsubscribe()
    finally:
        await nc.close()
    return found


def durable_consumers(stack: Stack) -> list[dict[str, Any]]:
    jsz = httpx.get(
        f"{stack.state()['monitor_url']}/jsz?streams=true&consumers=true&config=true", trust_env=False
    ).json()
    consumers = [c for a in jsz["account_details"] for s in a["stream_detail"] for c in s.get("consumer_detail", [])]
    return [c for c in consumers if c.get("config", {}).get("durable_name")]


def quiescent(stack: Stack) -> bool:
    """Every service ready, every durable caught up, every outbox drained, every order and expiration job final, and
    every charge attempt settled (its payment recorded, or the provider found to have charged nothing)."""
    for name in SERVICES:
        url = stack.state()["services"][name]["url"]
        assert httpx.get(f"{url}/readyz", trust_env=False, timeout=2).status_code == 200, f"{name} not ready"
    consumers = durable_consumers(stack)
    assert consumers, "no durable consumers"
    busy = [c["name"] for c in consumers if c["num_pending"] or c["num_ack_pending"]]
    assert not busy, f"consumers still busy: {[c for c in consumers if c['name'] in busy]}"

    async def counts() -> None:
        for name in SERVICES:
            unsent = await fetch(stack, name, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            assert unsent[0][0] == 0, f"{name}: {unsent[0][0]} outbox rows unsent"
        live = await fetch(
            stack, "orders", "SELECT count(*) FROM orders WHERE status IN ('created', 'awaiting:payment')"
        )
        assert live[0][0] == 0, f"{live[0][0]} orders still open"
        pending = await fetch(
            stack, "expiration", "SELECT count(*) FROM expiration_jobs WHERE fired_at IS NULL AND cancelled_at IS NULL"
        )
        assert pending[0][0] == 0, f"{pending[0][0]} expiration jobs pending"
        attempts = await fetch(stack, "payments", "SELECT count(*) FROM charge_attempts")
        assert attempts[0][0] == 0, f"{attempts[0][0]} charges not yet reconciled"

    asyncio.run(counts())
    # Consumers again: the last expirations' events must have been handled too.
    busy = [c for c in durable_consumers(stack) if c["num_pending"] or c["num_ack_pending"]]
    assert not busy, f"consumers still busy: {busy}"
    return True


class PublicationWatch:
    """A plain (core) NATS subscription to every stream's subjects for the whole run: it sees each publish, so a relay
    that publishes one Nats-Msg-Id twice shows here, though JetStream's dedupe window keeps the stream clean."""

    def __init__(self) -> None:
        self.nc: Any = None
        self.ids: dict[str, list[float]] = defaultdict(list)  # event id -> when each publish was seen
        self.seen = 0
        self.republished: Counter[str] = Counter()  # by the fault that explains it
        self.offline: list[tuple[float, float]] = []  # (from, to) wall-clock spans this watch was disconnected
        self._down_since: float | None = None

    @classmethod
    async def start(cls, stack: Stack) -> PublicationWatch:
        state = stack.state()
        watch = cls()
        watch.nc = nc = await nats.connect(
            state["nats_url"],
            nkeys_seed=state["nats_nkey_file"],  # the operator: subscribing to event subjects is refused to others
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
            connect_timeout=5,
            disconnected_cb=watch._on_disconnected,
            reconnected_cb=watch._on_reconnected,  # called once the subscriptions are sent to the new server
        )
        js = nc.jetstream()
        for stream in STREAMS:
            if stream == "DEADLETTERS":
                continue
            for subject in (await js.stream_info(stream)).config.subjects or []:
                await nc.subscribe(subject, cb=watch._on_message)
        return watch

    async def _on_message(self, msg: Any) -> None:
        self.seen += 1
        self.ids[(msg.headers or {}).get("Nats-Msg-Id", "")].append(time.monotonic())

    async def _on_disconnected(self) -> None:
        if self._down_since is None:
            self._down_since = time.time()

    async def _on_reconnected(self) -> None:
        if self._down_since is not None:
            self.offline.append((self._down_since, time.time()))
            self._down_since = None

    async def stop(self) -> None:
        await self.nc.close()

    def unseen(self, streams: dict[str, list[Message]]) -> tuple[list[str], int]:
        """Every event a stream stored must have been seen published: "exactly once" needs "at least once" too.
        The one excuse is an event stored while this watch was disconnected (the NATS restart: a relay may publish to
        the new server before the watch has resubscribed), with a second of margin for the two clocks' readings.
        Returns (problems, how many were excused)."""
        spans = [(start - 1.0, end + 1.0) for start, end in self.offline]
        if self._down_since is not None:
            spans.append((self._down_since - 1.0, float("inf")))
        problems: list[str] = []
        excused = 0
        for stream, messages in streams.items():
            if stream == "DEADLETTERS":
                continue
            for m in messages:
                if m.msg_id in self.ids:
                    continue
                if any(start <= m.stored_at <= end for start, end in spans):
                    excused += 1
                else:
                    problems.append(f"event {m.msg_id} ({m.subject}) is in {stream} but was never seen published")
        return problems, excused

    def problems(self, outbox_ids: set[str], faults: list[tuple[str, float]]) -> list[str]:
        """An event id published more than once is a problem unless a fault struck between its publishes: a relay
        killed after the PubAck but before it recorded the send, or a broker restart that lost the PubAck, publishes
        again (JetStream stores it once; the stream check says so). Nothing else may publish twice."""
        found = []
        for event_id, times in self.ids.items():
            if len(times) == 1:
                continue
            explained = [name for name, struck in faults if times[0] - 1.0 <= struck <= times[-1]]
            if len(times) == 2 and explained:
                self.republished[explained[-1]] += 1
            else:
                found.append(f"event {event_id} published {len(times)} times, no fault between (faults {explained})")
        found += [f"a publish without an event id from an outbox: {i!r}" for i in self.ids if i not in outbox_ids]
        return found


# ---------------------------------------------------------------------------------------------------------------
# The invariants


async def check_invariants(stack: Stack, seen: Outcomes) -> tuple[list[str], dict[str, Any]]:
    """Every way the services could disagree or have done something twice; returns (problems, figures)."""
    problems: list[str] = []
    db: dict[str, dict[str, list[asyncpg.Record]]] = defaultdict(dict)
    for name in SERVICES:
        db[name]["outbox"] = await fetch(stack, name, "SELECT id::text, subject, sent_at FROM outbox")
        db[name]["inbox"] = await fetch(stack, name, "SELECT consumer, message_id FROM inbox")
        db[name]["dead_letters"] = await fetch(stack, name, "SELECT consumer, message_id, reason FROM dead_letters")
    orders = await fetch(
        stack,
        "orders",
        "SELECT id::text, ticket_id::text, status, version, payment_id::text, stripe_id, refund_status FROM orders",
    )
    orders_tickets = {
        r["id"]: r for r in await fetch(stack, "orders", "SELECT id::text, version, order_id::text FROM tickets")
    }
    tickets = {
        r["id"]: r for r in await fetch(stack, "tickets", "SELECT id::text, version, order_id::text FROM tickets")
    }
    order_versions = {
        r["order_id"]: r
        for r in await fetch(
            stack, "tickets", "SELECT order_id::text, ticket_id::text, version, cancelled FROM order_versions"
        )
    }
    payment_orders = {
        r["id"]: r for r in await fetch(stack, "payments", "SELECT id::text, version, status FROM orders")
    }
    payments: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for row in await fetch(stack, "payments", "SELECT id::text, order_id::text, stripe_id FROM payments"):
        payments[row["order_id"]].append(row)
    jobs = {
        r["order_id"]: r
        for r in await fetch(
            stack, "expiration", "SELECT order_id::text, version, fired_at, cancelled_at FROM expiration_jobs"
        )
    }
    streams = await read_streams(stack)

    # -- events: every committed event is in its stream exactly once, nothing else is, and nobody dead-lettered one
    published: dict[str, str] = {}
    for name in SERVICES:
        for row in db[name]["outbox"]:
            if row["sent_at"] is None:
                problems.append(f"{name}: outbox row {row['id']} ({row['subject']}) never sent")
            published[row["id"]] = row["subject"]
        problems += [f"{name}: dead letter {dict(r)}" for r in db[name]["dead_letters"]]
    problems += [f"DEADLETTERS stream holds {m.subject} {m.data}" for m in streams["DEADLETTERS"]]
    in_streams = Counter(m.msg_id for stream in STREAMS for m in streams[stream])
    problems += [f"event {i} is in the streams {n} times" for i, n in in_streams.items() if n > 1]
    problems += [
        f"event {i} ({s}) committed but not in its stream" for i, s in published.items() if i not in in_streams
    ]
    problems += [f"event {i} in a stream but in no outbox" for i in in_streams if i not in published]

    # -- every durable consumer handled every event of its subject once: the inbox holds exactly the stream's ids
    by_subject: dict[str, set[str]] = defaultdict(set)
    for stream in STREAMS:
        for m in streams[stream]:
            by_subject[m.subject].add(m.msg_id)
    consumers = durable_consumers(stack)
    missing = REQUIRED_CONSUMERS - {c["name"] for c in consumers}
    problems += [f"no durable consumer {name}: its events were never handled" for name in sorted(missing)]
    for consumer in consumers:
        durable = consumer["name"]
        owner = durable.split("-", 1)[0]
        handled = {r["message_id"] for r in db[owner]["inbox"] if r["consumer"] == durable}
        expected = by_subject[consumer["config"]["filter_subject"]]
        if handled != expected:
            problems.append(
                f"{durable}: {len(expected - handled)} events never handled, {len(handled - expected)} unknown handled"
            )

    # -- per order: tickets, orders, payments and expiration agree, and each effect happened once
    created_events = Counter(m.data["id"] for m in streams["ORDERS"] if m.subject == "order.created")
    cancelled_events: dict[str, list[int]] = defaultdict(list)
    for m in streams["ORDERS"]:
        if m.subject == "order.cancelled":
            cancelled_events[m.data["id"]].append(m.data["version"])
    charge_events = Counter(m.data["orderId"] for m in streams["PAYMENTS"] if m.subject == "payment.created")
    expiry_events = Counter(m.data["orderId"] for m in streams["EXPIRATION"])
    status_of = {o["id"]: o["status"] for o in orders}
    refunds = 0
    for o in orders:
        oid, status = o["id"], o["status"]
        ticket = tickets.get(o["ticket_id"])
        version_row = order_versions.get(oid)
        replica = payment_orders.get(oid)
        job = jobs.get(oid)
        rows = payments.get(oid, [])
        where = f"order {oid} ({status})"
        if ticket is None or version_row is None or replica is None or job is None:
            problems.append(
                f"{where}: missing in tickets/order_versions/payments/expiration: {ticket, version_row, replica, job}"
            )
            continue
        if created_events[oid] != 1:
            problems.append(f"{where}: order.created published {created_events[oid]} times")
        if len(rows) > 1 or charge_events[oid] > 1 or len(rows) != charge_events[oid]:
            problems.append(f"{where}: {len(rows)} payment rows, {charge_events[oid]} payment.created events")
        if expiry_events[oid] > 1 or expiry_events[oid] != (job["fired_at"] is not None):
            problems.append(f"{where}: expiration.complete published {expiry_events[oid]} times, job {dict(job)}")
        if status == "cancelled":
            if cancelled_events[oid] != [o["version"]]:
                problems.append(f"{where}: order.cancelled versions {cancelled_events[oid]}, order at {o['version']}")
            if ticket["order_id"] == oid:
                problems.append(f"{where}: tickets still reserves {o['ticket_id']} for it")
            if not version_row["cancelled"] or version_row["version"] != o["version"]:
                problems.append(f"{where}: tickets' order_versions says {dict(version_row)}")
            if replica["status"] != "cancelled" or replica["version"] != o["version"]:
                problems.append(f"{where}: payments' replica says {dict(replica)}")
            if job["fired_at"] is None and job["cancelled_at"] is None:
                problems.append(f"{where}: expiration job neither fired nor cancelled")
            if rows:
                # Rule 9: a payment that met the cancelled order is kept for a refund, visibly.
                refunds += 1
                if o["refund_status"] is None or o["payment_id"] != rows[0]["id"]:
                    problems.append(f"{where}: paid ({rows[0]['id']}) but no refund recorded: {dict(o)}")
        elif status == "complete":
            if cancelled_events[oid]:
                problems.append(f"{where}: order.cancelled published for a completed order")
            if len(rows) != 1 or o["payment_id"] != rows[0]["id"] or o["stripe_id"] != rows[0]["stripe_id"]:
                problems.append(f"{where}: payment rows {[dict(r) for r in rows]} vs order {dict(o)}")
            if ticket["order_id"] != oid or version_row["cancelled"]:
                problems.append(f"{where}: tickets says ticket {dict(ticket)}, order_versions {dict(version_row)}")
            if replica["status"] == "cancelled":
                problems.append(f"{where}: payments' replica says cancelled")
            if job["cancelled_at"] is not None:
                problems.append(f"{where}: expiration job cancelled")
        else:  # open orders do not outlive quiescence; kept so the rules read whole
            if ticket["order_id"] != oid or job["fired_at"] or job["cancelled_at"] or replica["status"] == "cancelled":
                problems.append(f"{where}: open, yet {dict(ticket)} {dict(job)} {dict(replica)}")
    problems += [f"payment rows for unknown order {oid}" for oid in payments if oid not in status_of]
    for name, known in (("payments", payment_orders), ("expiration", jobs), ("tickets", order_versions)):
        problems += [f"{name} knows order {oid} that orders does not" for oid in known if oid not in status_of]

    # -- per ticket: reserved by exactly its live order, and its versions published 0..n once each
    reserving: dict[str, str] = {}
    for o in orders:
        if o["status"] != "cancelled":
            if o["ticket_id"] in reserving:
                problems.append(f"ticket {o['ticket_id']} reserved by two orders")
            reserving[o["ticket_id"]] = o["id"]
    versions: dict[str, list[int]] = defaultdict(list)
    for m in streams["TICKETS"]:
        versions[m.data["id"]].append(m.data["version"])
        if (m.subject == "ticket.created") != (m.data["version"] == 0):
            problems.append(f"{m.subject} with version {m.data['version']} for ticket {m.data['id']}")
    for tid, t in tickets.items():
        if t["order_id"] != reserving.get(tid):
            problems.append(f"ticket {tid}: tickets says order {t['order_id']}, orders says {reserving.get(tid)}")
        if versions[tid] != list(range(t["version"] + 1)):
            problems.append(f"ticket {tid} at version {t['version']}: events {versions[tid]}")
        replica_ticket = orders_tickets.get(tid)
        if replica_ticket is None or (replica_ticket["version"], replica_ticket["order_id"]) != (
            t["version"],
            t["order_id"],
        ):
            problems.append(f"ticket {tid} v{t['version']}: orders' replica {replica_ticket and dict(replica_ticket)}")
    problems += [
        f"orders' replica has ticket {tid} that tickets does not" for tid in orders_tickets if tid not in tickets
    ]

    # -- what the clients were told holds
    for oid in seen.placed:
        if oid not in status_of:
            problems.append(f"order {oid} was placed (201) but orders does not have it")
    for oid in seen.cancelled:
        if status_of.get(oid) != "cancelled":
            problems.append(f"order {oid} was cancelled (204) but is {status_of.get(oid)}")
    for oid in seen.paid:
        paid_rows = payments.get(oid, [])
        if len(paid_rows) != 1 or status_of.get(oid) not in ("complete", "cancelled"):
            problems.append(f"order {oid} was paid (201) but is {status_of.get(oid)} with {len(paid_rows)} payments")
    for oid in seen.declined:
        if payments.get(oid) or status_of.get(oid) != "cancelled":
            problems.append(f"order {oid} was declined (402) but is {status_of.get(oid)} with payments")

    figures = {
        "streams": streams,
        "outbox_ids": set(published),
        "orders": Counter(status_of.values()),
        "refunds": refunds,
        "tickets": len(tickets),
        "events": sum(len(streams[s]) for s in STREAMS),
        "consumers": len(consumers),
        "expired": sum(
            1 for j in jobs.values() if j["fired_at"] is not None and status_of.get(j["order_id"]) == "cancelled"
        ),
    }
    return problems, figures


# ---------------------------------------------------------------------------------------------------------------
# Handled once, proved on the effects. The inboxes cannot show a double handling (each is keyed by consumer and
# message id, so a second handling of one message is not a second row); what a handling does can. Each effect below
# would differ if an event had been acted on twice, and the last one is counted on the provider's side.


@dataclass
class Effects:
    """What the run did, counted per ticket and per order, for the summary line."""

    tickets: int = 0  # tickets whose versions 0..v were each published once, v the source's and the replica's
    orders: int = 0  # orders that ended at version 1: one transition (complete or cancelled) each
    reserved: int = 0  # orders tickets reserved (at most once each; every complete order exactly once)
    released: int = 0  # reservations tickets released (at most once per order; never a complete order's)
    payments: int = 0  # payment rows (at most one per order; exactly one per complete order)
    charges: int = 0  # charges in the provider's ledger (exactly one per idempotency key, each a payment row's)
    max_per_key: int = 0
    expirations: int = 0  # expiration.complete events (at most one per order)


@dataclass
class Recorded:
    """What the effects check reads once all is quiet: the databases' rows and the provider's ledger."""

    orders: dict[str, dict[str, Any]]  # orders' orders by id: status, version, stripe_id
    tickets: dict[str, int]  # tickets' version of each ticket (the source)
    replica: dict[str, int]  # orders' replica's version of each ticket
    paid: dict[str, list[str]]  # payments: order id -> the charge id of each payment row
    per_key: Counter[str]  # the provider's ledger: charges per idempotency key
    charge_of: dict[str, str]  # the provider's ledger: idempotency key -> the charge id made under it


async def read_recorded(stack: Stack, ledger: Path) -> Recorded:
    orders = {
        r["id"]: dict(r)
        for r in await fetch(stack, "orders", "SELECT id::text, status, version, stripe_id FROM orders")
    }
    source = {r["id"]: r["version"] for r in await fetch(stack, "tickets", "SELECT id::text, version FROM tickets")}
    replica = {r["id"]: r["version"] for r in await fetch(stack, "orders", "SELECT id::text, version FROM tickets")}
    paid: dict[str, list[str]] = defaultdict(list)
    for row in await fetch(stack, "payments", "SELECT order_id::text, stripe_id FROM payments"):
        paid[row["order_id"]].append(row["stripe_id"])
    book = FakeLedger(ledger)
    try:
        charge_of = {c.idempotency_key: c.charge_id for c in book.charges()}
    finally:
        book.close()
    return Recorded(orders, source, replica, dict(paid), charges_per_key(ledger), charge_of)


def handled_once_by_effect(recorded: Recorded, streams: dict[str, list[Message]]) -> tuple[list[str], Effects]:
    """Versions, reservations, payments and provider charges, expirations: each happened once per cause.
    (tests/test_chaos_checks.py shows each check failing on a run that did something twice.)"""
    problems: list[str] = []
    effects = Effects()
    orders, source, replica, paid = recorded.orders, recorded.tickets, recorded.replica, recorded.paid

    # Versions: each ticket's versions 0..v were each published once, v is the source's, and orders' replica holds v.
    history: dict[str, list[Message]] = defaultdict(list)
    for m in streams["TICKETS"]:
        history[m.data["id"]].append(m)
    for tid, version in source.items():
        published = [m.data["version"] for m in history[tid]]
        if published != list(range(version + 1)) or replica.get(tid) != version:
            problems.append(
                f"ticket {tid} v{version}: published versions {published}, orders' replica {replica.get(tid)}"
            )
        else:
            effects.tickets += 1

    # Reservations: tickets acted on each order.created / order.cancelled once. A second handling of either would be
    # a second version of the ticket taking or giving up the same order.
    reserved: Counter[str] = Counter()
    released: Counter[str] = Counter()
    for messages in history.values():
        holder = None
        for m in messages:
            now = m.data.get("orderId")
            if now != holder:
                if holder:
                    released[holder] += 1
                if now:
                    reserved[now] += 1
            holder = now
    for oid, o in orders.items():
        taken, freed = reserved[oid], released[oid]
        if o["status"] == "complete" and (taken, freed) != (1, 0):
            problems.append(f"order {oid} (complete): its ticket reserved {taken} times, released {freed} times")
        elif o["status"] == "cancelled" and (taken > 1 or freed != taken):
            problems.append(f"order {oid} (cancelled): its ticket reserved {taken} times, released {freed} times")
        # Orders: created at version 0, then completed or cancelled once (a refund flag is not a version).
        if o["version"] != 1:
            problems.append(f"order {oid} ({o['status']}) at version {o['version']}: not exactly one transition")
        else:
            effects.orders += 1
    effects.reserved, effects.released = sum(reserved.values()), sum(released.values())
    problems += [
        f"tickets reserved for order {oid}, which orders does not have" for oid in reserved if oid not in orders
    ]

    # Payments: at most one row per order, exactly one for a complete order, and the charge the order names.
    for oid, charges in paid.items():
        if len(charges) > 1:
            problems.append(f"order {oid}: {len(charges)} payment rows")
    for oid, o in orders.items():
        if o["status"] == "complete" and paid.get(oid) != [o["stripe_id"]]:
            problems.append(f"order {oid} (complete, charge {o['stripe_id']}): payment rows name {paid.get(oid)}")
    effects.payments = sum(len(charges) for charges in paid.values())

    # The provider's side: exactly one charge per idempotency key (the order id), each one a payment row records (a
    # charge nobody recorded is money taken and never refunded), and one for every complete order.
    per_key, charge_of = recorded.per_key, recorded.charge_of
    problems += [f"order {key}: charged {n} times by the provider" for key, n in per_key.items() if n != 1]
    for key, charge_id in charge_of.items():
        if paid.get(key) != [charge_id]:
            problems.append(f"order {key}: the provider charged {charge_id}, payment rows name {paid.get(key)}")
    problems += [
        f"order {oid} (complete): {per_key[oid]} provider charges"
        for oid, o in orders.items()
        if o["status"] == "complete" and per_key[oid] != 1
    ]
    effects.charges, effects.max_per_key = sum(per_key.values()), max(per_key.values(), default=0)

    # Expirations: at most one expiration.complete per order.
    expired = Counter(m.data["orderId"] for m in streams["EXPIRATION"] if m.subject == "expiration.complete")
    problems += [f"order {oid}: expiration.complete published {n} times" for oid, n in expired.items() if n > 1]
    effects.expirations = sum(expired.values())
    return problems, effects


# ---------------------------------------------------------------------------------------------------------------


# `make test` runs it alone, after the other tests (see the Makefile and tests/conftest.py).
@pytest.mark.alone
@needs(*SERVICES)
async def test_every_service_agrees_on_every_order_after_each_one_and_the_broker_and_database_crash(
    stack: Stack, provider_ledger: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    client = Client(stack.url)
    seen = Outcomes()
    faults: list[str] = []
    try:
        seller = await signup(client)
        buyers = [await signup(client) for _ in range(6)]
        chaos_done = asyncio.Event()
        publications = await PublicationWatch.start(stack)
        chaos_task = asyncio.create_task(chaos(stack, chaos_done, faults, client))
        flows: list[asyncio.Task[None]] = []
        while len(flows) < MAX_FLOWS and not (chaos_done.is_set() and len(flows) >= MIN_FLOWS):
            flows.append(asyncio.create_task(flow(len(flows), client, seller, buyers, seen)))
            await asyncio.sleep(FLOW_SPACING)
        try:
            await asyncio.gather(*flows)
        finally:
            for task in flows:
                task.cancel()
            await chaos_task
    finally:
        await client.http.aclose()
        await client.auth_http.aclose()
    workload_done = time.monotonic()

    await asyncio.to_thread(eventually, lambda: quiescent(stack), timeout=60, interval=0.5)
    agreed_after = time.monotonic() - workload_done
    await publications.stop()
    problems, figures = await check_invariants(stack, seen)
    problems += publications.problems(figures["outbox_ids"], client.fault_log)
    unseen, excused = publications.unseen(figures["streams"])
    problems += unseen
    once, effects = handled_once_by_effect(await read_recorded(stack, provider_ledger), figures["streams"])
    problems += once
    problems += [f"not a 503 with Retry-After: {line}" for line in client.bad_5xx]
    problems += [f"outside any fault: {line}" for line in client.outside_fault]
    problems += [f"404 for an existing entity: {line}" for line in client.missing_404]
    assert not problems, f"{len(problems)} problems, the first:\n" + "\n".join(problems[:25])
    # How soon they agreed is printed against the bound, not asserted: a timing, on a shared machine (bench/).

    restarts = {name: stack.state()["services"][name]["restarts"] for name in SERVICES}
    assert restarts == dict.fromkeys(SERVICES, 1), f"a service crashed by itself: restarts {restarts}"
    assert stack.state()["nats_restarts"] == 1 and stack.state()["postgres_restarts"] == 1
    assert len(seen.placed) >= MIN_FLOWS
    assert len(faults) == 7

    by_state = ", ".join(f"{n} {s}" for s, n in sorted(figures["orders"].items()))
    retried = sum(client.retries.values())
    with capsys.disabled():
        print(
            f"\nchaos: {sum(figures['orders'].values())} orders ({by_state}; {figures['expired']} expired, "
            f"{len(seen.cancelled)} cancelled by buyers, {len(seen.declined)} declined, {len(seen.late)} refused as "
            f"expired, {figures['refunds']} paid but expired first, marked for refund) on {figures['tickets']} tickets "
            f"in {len(flows)} flows; faults: {', '.join(faults)}; "
            f"{client.requests} requests, {retried} retried (by cause: {dict(client.retries.most_common())}), "
            f"0 5xx but 503 with Retry-After, 0 failures outside a fault, {len(client.missing_404)} 404s for an "
            f"existing entity; "
            f"{publications.seen} publications seen on core NATS, each event id once but "
            f"{sum(publications.republished.values())} republished across a fault ({dict(publications.republished)}), "
            f"every stored event seen published but {excused} stored while the watch reconnected; "
            f"handled once, by effect: {effects.tickets} tickets' versions 0..v each published once and equal in "
            f"orders' replica, {effects.orders} orders at version 1 (one transition each), {effects.reserved} "
            f"reservations and {effects.released} releases by tickets (at most one each per order, one per complete "
            f"order), {effects.payments} payment rows (at most one per order, one per complete order), "
            f"{effects.charges} provider charges in the ledger (at most {effects.max_per_key} per idempotency key, "
            f"each a payment row's), {effects.expirations} expiration.complete (at most one per order); "
            f"all agreed {agreed_after:.1f}s after the load (target {AGREE_WITHIN:.0f}s, not asserted); "
            f"{figures['events']} events, {figures['consumers']} consumers checked; "
            f"workload {workload_done - started:.1f}s, total {time.monotonic() - started:.1f}s"
        )
