"""propagation: how long after a ticket's commit in tickets the row is in orders' replica, at a steady 200 events/s.

Ours: POST /api/tickets on a fixed open-loop schedule (RATE a second); for each ticket, from the moment its 201
arrives (the transaction has committed by then) until a poller sees the row in orders' `tickets` table. The poller
asks orders' database for the pending ids with one query per millisecond, so the figure includes up to ~1 ms of
polling granularity. The path: outbox NOTIFY, the relay's publish and PubAck, JetStream, orders' pull consumer, its
inbox + replica transaction.

Baseline: raw nats-py on the same nats-server at the same rate: a JetStream publish (file storage, like ours) to a
stream of its own, consumed by a durable pull consumer with fetch + ack; from the publish call until the consumer
holds the message.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from typing import Any

import asyncpg
import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from bench import loadgen
from bench.harness import (
    ROUNDS,
    SECONDS,
    Infra,
    Result,
    Row,
    ServerProcess,
    infra,
    median,
    percentile,
    running,
    say,
    start_uvicorn,
)
from ticketing_testing import make_user

RATE = float(os.environ.get("BENCH_PROPAGATION_RATE", "200"))
P50_TARGET_MS = 5.0
P99_TARGET_MS = 25.0
POLL_SECONDS = 0.001
SETTLE_SECONDS = 10.0  # how long to wait for stragglers after the last request
_BODY = json.dumps({"title": "Propagation probe", "price": 12.0}).encode()


def _latency_summary(latencies_ms: list[float], expected: int) -> dict[str, Any]:
    return {
        "events": expected,
        "arrived": len(latencies_ms),
        "p50_ms": round(percentile(latencies_ms, 0.5), 3),
        "p99_ms": round(percentile(latencies_ms, 0.99), 3),
        "max_ms": round(max(latencies_ms), 3) if latencies_ms else None,
    }


async def _ours_round(tickets: ServerProcess, orders_dsn: str) -> dict[str, Any]:
    """One round of ours: open-loop creates, and a poller that waits for each id in orders' replica."""
    user = make_user()
    request = loadgen.request_bytes("POST", "/api/tickets", body=_BODY, headers=user.headers)
    committed: dict[uuid.UUID, float] = {}
    latencies: list[float] = []
    pending: set[uuid.UUID] = set()
    load_done = asyncio.Event()

    def on_response(status: int, body: bytes, received: float) -> None:
        if status == 201:
            ticket_id = uuid.UUID(json.loads(body)["id"])
            committed[ticket_id] = received
            pending.add(ticket_id)

    async def poll() -> None:
        conn = await asyncpg.connect(orders_dsn)
        try:
            query = await conn.prepare("SELECT id FROM tickets WHERE id = ANY($1::uuid[])")
            deadline = None
            while pending or not load_done.is_set():
                if load_done.is_set() and deadline is None:
                    deadline = time.perf_counter() + SETTLE_SECONDS
                if deadline is not None and time.perf_counter() > deadline:
                    break
                if pending:
                    rows = await query.fetch(list(pending))
                    seen = time.perf_counter()
                    for row in rows:
                        pending.discard(row[0])
                        latencies.append((seen - committed[row[0]]) * 1000)
                await asyncio.sleep(POLL_SECONDS)
        finally:
            await conn.close()

    poller = asyncio.create_task(poll())
    load = await loadgen.open_loop(
        "127.0.0.1", tickets.port, lambda: request, rate=RATE, seconds=SECONDS, on_response=on_response
    )
    load_done.set()
    await poller
    if load.ok < load.count or load.errors:
        say(f"propagation: {load.count - load.ok} non-201 answers, {load.errors} errors")
    return _latency_summary(latencies, len(committed)) | {"http_p50_ms": round(load.p50, 3)}


async def _baseline_round(base: Infra, round_no: int) -> dict[str, Any]:
    """One round of the baseline: JetStream publish -> durable pull consumer, at the same rate."""
    nc = await nats.connect(base.nats_url, name="bench-propagation")
    js = nc.jetstream()
    stream, subject, durable = "BENCHPROP", "benchprop.event", f"bench-prop-{round_no}"
    try:
        try:
            await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(StreamConfig(name=stream, subjects=["benchprop.>"], storage=StorageType.FILE))
        await js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=durable,
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.EXPLICIT,
                filter_subject=subject,
                ack_wait=30,
            ),
        )
        sub = await js.pull_subscribe_bind(durable=durable, stream=stream)
        total = int(RATE * SECONDS)
        sent: dict[int, float] = {}
        latencies: list[float] = []
        done = asyncio.Event()

        async def consume() -> None:
            while not done.is_set():
                try:
                    messages = await sub.fetch(100, timeout=1)
                except TimeoutError:
                    continue
                arrived = time.perf_counter()
                for msg in messages:
                    started = sent.get(int(msg.data))
                    if started is not None:
                        latencies.append((arrived - started) * 1000)
                    await msg.ack()
                if len(latencies) >= total:
                    done.set()

        async def publish(index: int) -> None:
            sent[index] = time.perf_counter()
            await js.publish(subject, str(index).encode(), headers={"Nats-Msg-Id": str(uuid.uuid4())})

        consumer = asyncio.create_task(consume())
        start = time.perf_counter() + 0.05
        tasks = set()
        for i in range(total):
            delay = start + i / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(publish(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        try:
            await asyncio.wait_for(done.wait(), timeout=SETTLE_SECONDS)
        except TimeoutError:
            done.set()
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await sub.unsubscribe()
        return _latency_summary(latencies, total)
    finally:
        await nc.close()


async def run() -> Result:
    """ROUNDS alternating rounds of ours and the baseline; medians of the rounds' p50 and p99."""
    async with infra() as base:
        tickets_url, orders_url = await asyncio.gather(
            base.database("tickets", "ticketing_tickets"), base.database("orders", "ticketing_orders")
        )
        async with running(
            start_uvicorn(
                "tickets",
                "ticketing_tickets.app:create_app",
                base.service_env("tickets", tickets_url),
                base.log_path("tickets"),
                "/readyz",
            ),
            start_uvicorn(
                "orders",
                "ticketing_orders.app:create_app",
                base.service_env("orders", orders_url),
                base.log_path("orders"),
                "/readyz",
            ),
        ) as (tickets, _orders):
            rounds: dict[str, list[dict[str, Any]]] = {"ours": [], "baseline": []}
            for i in range(ROUNDS):
                sides = ["ours", "baseline"] if i % 2 == 0 else ["baseline", "ours"]
                for side in sides:
                    if side == "ours":
                        summary = await _ours_round(tickets, base.dsn("orders"))
                    else:
                        summary = await _baseline_round(base, i)
                    rounds[side].append(summary)
                    say(
                        f"propagation round {i + 1} {side}: {summary['arrived']}/{summary['events']} "
                        f"p50 {summary['p50_ms']:.2f} ms p99 {summary['p99_ms']:.2f} ms"
                    )
    ours_p50 = median([r["p50_ms"] for r in rounds["ours"]])
    ours_p99 = median([r["p99_ms"] for r in rounds["ours"]])
    lost = sum(r["events"] - r["arrived"] for r in rounds["ours"])
    result = Result("propagation")
    result.rows = [
        Row(
            figure=f"commit -> orders replica at {RATE:.0f}/s (p50 ms)",
            unit="ms",
            ours=ours_p50,
            baseline=median([r["p50_ms"] for r in rounds["baseline"]]),
            ours_p50_ms=ours_p50,
            ours_p99_ms=ours_p99,
            baseline_p50_ms=median([r["p50_ms"] for r in rounds["baseline"]]),
            baseline_p99_ms=median([r["p99_ms"] for r in rounds["baseline"]]),
            target=f"p50 <= {P50_TARGET_MS:.0f} ms, p99 <= {P99_TARGET_MS:.0f} ms",
            met=ours_p50 <= P50_TARGET_MS and ours_p99 <= P99_TARGET_MS and lost == 0,
        )
    ]
    result.details = {"rate": RATE, "poll_seconds": POLL_SECONDS, "rounds": rounds}
    result.notes.append("baseline = raw JetStream publish -> pull-consume round trip on the same nats-server")
    if lost:
        result.notes.append(f"{lost} tickets did not reach orders within {SETTLE_SECONDS:.0f} s of the last request")
    return result
