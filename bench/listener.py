"""listener: how many ticket.created events a second one orders instance applies to its replica, with DB writes.

Ours: the orders durable `orders-ticket-created` is paused, EVENTS valid ticket.created events are published to
JetStream, then the consumer is resumed; the rate is counted from the first replica row to the last (rows polled
every 5 ms), so neither publishing nor the resume latency is in it. Each event goes through the real listener:
fetch, inbox claim, the version gate and the insert, one transaction per fetched batch, then the acks.

Baseline: raw asyncpg on the same database, one connection, one transaction per row (BEGIN, INSERT, COMMIT) into a
table shaped like the replica: what a listener without batching would cost at best.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import nats

from bench.harness import (
    ROUNDS,
    SECONDS,
    Infra,
    Result,
    Row,
    ServerProcess,
    cpu_seconds,
    infra,
    median,
    running,
    say,
    start_uvicorn,
)
from ticketing_common.events import TicketCreated

TARGET_RATE = 1500.0
EVENTS = int(os.environ.get("BENCH_LISTENER_EVENTS", str(int(SECONDS * TARGET_RATE))))
STREAM, DURABLE = "TICKETS", "orders-ticket-created"
_RAW_TABLE = """
CREATE TABLE IF NOT EXISTS raw_replica (
    id uuid PRIMARY KEY, title varchar(200) NOT NULL, price numeric(10, 2) NOT NULL,
    version integer NOT NULL, order_id uuid
)"""


async def _count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM tickets"))


async def _ours_round(base: Infra, orders: ServerProcess) -> dict[str, Any]:
    nc = await nats.connect(base.nats_url, name="bench-listener")
    conn = await asyncpg.connect(base.dsn("orders"))
    try:
        js = nc.jetstream()
        await js.pause_consumer(STREAM, DURABLE, "2100-01-01T00:00:00Z")
        before = await _count(conn)
        user = uuid.uuid4()
        for _ in range(EVENTS):
            event = TicketCreated(
                id=uuid.uuid4(), version=0, title="Listener probe", price=Decimal("9.99"), user_id=user
            )
            await js.publish_async(event.subject, event.to_bytes(), headers={"Nats-Msg-Id": str(event.event_id)})
        await js.publish_async_completed()
        cpu_before = cpu_seconds(orders.pid)
        await js.resume_consumer(STREAM, DURABLE)
        target = before + EVENTS
        first_at = first_count = None
        deadline = time.perf_counter() + 60
        while True:
            count = await _count(conn)
            now = time.perf_counter()
            if first_at is None and count > before:
                first_at, first_count = now, count
            if count >= target or now > deadline:
                break
            await asyncio.sleep(0.005)
        if first_at is None or first_count is None or count < target:
            raise RuntimeError(f"orders applied {count - before} of {EVENTS} events within 60 s:\n{orders.tail()}")
        elapsed = now - first_at
        cores = (cpu_seconds(orders.pid) - cpu_before) / max(elapsed, 1e-9)
        return {
            "events": EVENTS,
            "seconds": round(elapsed, 3),
            "rate": round((target - first_count) / elapsed, 1),
            "orders_cores": round(cores, 2),
        }
    finally:
        await conn.close()
        await nc.close()


async def _baseline_round(base: Infra) -> dict[str, Any]:
    conn = await asyncpg.connect(base.dsn("orders"))
    try:
        await conn.execute(_RAW_TABLE)
        insert = await conn.prepare(
            "INSERT INTO raw_replica (id, title, price, version, order_id) VALUES ($1, $2, $3, 0, NULL)"
        )
        price = Decimal("9.99")
        started = time.perf_counter()
        for _ in range(EVENTS):
            async with conn.transaction():
                await insert.fetch(uuid.uuid4(), "Listener probe", price)
        elapsed = time.perf_counter() - started
        return {"events": EVENTS, "seconds": round(elapsed, 3), "rate": round(EVENTS / elapsed, 1)}
    finally:
        await conn.close()


async def run() -> Result:
    """ROUNDS alternating rounds; the median rate of each side."""
    async with infra() as base:
        url = await base.database("orders", "ticketing_orders")
        async with running(
            start_uvicorn(
                "orders",
                "ticketing_orders.app:create_app",
                base.service_env("orders", url),
                base.log_path("orders"),
                "/readyz",
            )
        ) as (orders,):
            rounds: dict[str, list[dict[str, Any]]] = {"ours": [], "baseline": []}
            for i in range(ROUNDS):
                for side in ["ours", "baseline"] if i % 2 == 0 else ["baseline", "ours"]:
                    summary = await (_ours_round(base, orders) if side == "ours" else _baseline_round(base))
                    rounds[side].append(summary)
                    say(f"listener round {i + 1} {side}: {summary['rate']:,.0f} events/s ({summary['seconds']:.2f} s)")
    ours = median([r["rate"] for r in rounds["ours"]])
    result = Result("listener")
    result.rows = [
        Row(
            figure="ticket.created applied by one orders instance",
            unit="events/s",
            ours=ours,
            baseline=median([r["rate"] for r in rounds["baseline"]]),
            target=f">= {TARGET_RATE:,.0f} events/s",
            met=ours >= TARGET_RATE,
        )
    ]
    result.details = {"events_per_round": EVENTS, "rounds": rounds}
    result.notes.append("baseline = raw asyncpg, one connection, BEGIN/INSERT/COMMIT per row")
    return result
