"""expiration: how late expiration.complete fires while 100, 1,000 and 10,000 jobs are pending, and a backlog drain.

Moved here from services/expiration/bench/lateness.py; the measurement is the same, run against one expiration
worker (uvicorn, as deployed) instead of an in-process app:

- steady: for each pending count N, N - PROBES jobs are stored far in the future (pending, indexed, never due during
  the run) and PROBES order.created events are published through NATS with expiresAt spread evenly over SPREAD
  seconds, starting once every probe is stored. Lateness = when expiration.complete reached a subscriber minus
  expiresAt (and, separately, the row's fired_at minus expiresAt). The contract allows 1 s; the target is
  p99 <= 500 ms, flat as N grows from 100 to 10,000.
- backlog: BACKLOG jobs that fell due while the service was down; the time from starting it until the last event.

There is no raw baseline: the figure is absolute. Nothing else than the service runs against its database.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import nats

from bench.harness import (
    Infra,
    Result,
    Row,
    ServerProcess,
    infra,
    percentile,
    running,
    say,
    start_uvicorn,
)
from ticketing_common import bus
from ticketing_common.events import OrderCreated, OrderStatus, OrderTicket

PENDING_COUNTS = (100, 1_000, 10_000)
PROBES = 100
SPREAD = float(os.environ.get("BENCH_EXPIRATION_SPREAD", "3"))
LEAD = 1.5  # seconds between publishing the probes and the first one falling due
BACKLOG = int(os.environ.get("BENCH_EXPIRATION_BACKLOG", "10000"))
P99_TARGET_MS = 500.0
FLAT_SLACK_MS = 50.0


def _summary(lateness_ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(lateness_ms, 0.5), 2),
        "p99_ms": round(percentile(lateness_ms, 0.99), 2),
        "max_ms": round(max(lateness_ms), 2),
        "min_ms": round(min(lateness_ms), 2),
    }


async def _steady(base: Infra, pending: int) -> dict[str, Any]:
    """Lateness of PROBES jobs falling due while `pending` jobs in all are pending."""
    conn = await asyncpg.connect(base.dsn("expiration"))
    nc = await nats.connect(base.nats_url, name="bench-expiration")
    try:
        await conn.execute("TRUNCATE expiration_jobs")
        await conn.execute(
            "INSERT INTO expiration_jobs (order_id, version, expires_at) "
            "SELECT gen_random_uuid(), 0, now() + interval '1 hour' FROM generate_series(1, $1::int)",
            pending - PROBES,
        )
        await conn.execute("ANALYZE expiration_jobs")
        arrived: dict[str, float] = {}
        done = asyncio.Event()

        async def on_complete(msg: nats.aio.msg.Msg) -> None:
            arrived.setdefault(json.loads(msg.data)["orderId"], time.time())
            if len(arrived) >= PROBES:
                done.set()

        await nc.subscribe("expiration.complete", cb=on_complete)
        js = nc.jetstream()
        first_due = datetime.now(UTC) + timedelta(seconds=LEAD)
        expires: dict[str, float] = {}
        for i in range(PROBES):
            event = OrderCreated(
                id=uuid.uuid4(),
                version=0,
                status=OrderStatus.CREATED,
                user_id=uuid.uuid4(),
                expires_at=first_due + timedelta(seconds=SPREAD * i / PROBES),
                ticket=OrderTicket(id=uuid.uuid4(), price=Decimal("10.00")),
            )
            expires[str(event.id)] = event.expires_at.timestamp()
            await js.publish_async(event.subject, event.to_bytes(), headers={"Nats-Msg-Id": str(event.event_id)})
        await js.publish_async_completed()
        stored = 0
        while time.time() < first_due.timestamp():
            stored = int(await conn.fetchval("SELECT count(*) FROM expiration_jobs"))
            if stored >= pending:
                break
            await asyncio.sleep(0.05)
        if stored < pending:
            say(f"expiration: only {stored - (pending - PROBES)} of {PROBES} probes stored before the first was due")
        await asyncio.wait_for(done.wait(), timeout=SPREAD + LEAD + 30)
        fired = await conn.fetch(
            "SELECT extract(epoch FROM fired_at - expires_at) * 1000 FROM expiration_jobs WHERE fired_at IS NOT NULL"
        )
    finally:
        await nc.close()
        await conn.close()
    received_ms = [(arrived[k] - expires[k]) * 1000 for k in expires]
    return {
        "pending": pending,
        "probes": PROBES,
        "received": _summary(received_ms),
        "fired_at": _summary([float(r[0]) for r in fired]),
        "early": sum(1 for v in received_ms if v < 0),
    }


async def _backlog(base: Infra, url: str) -> dict[str, Any]:
    """BACKLOG jobs already due when the service starts: seconds from its start until the last event arrives."""
    conn = await asyncpg.connect(base.dsn("expiration"))
    try:
        await conn.execute("TRUNCATE expiration_jobs, outbox")
        await conn.execute(
            "INSERT INTO expiration_jobs (order_id, version, expires_at) "
            "SELECT gen_random_uuid(), 0, now() - interval '1 minute' FROM generate_series(1, $1::int)",
            BACKLOG,
        )
    finally:
        await conn.close()
    nc = await nats.connect(base.nats_url, name="bench-expiration-backlog")
    seen = 0
    done = asyncio.Event()

    async def on_complete(_msg: nats.aio.msg.Msg) -> None:
        nonlocal seen
        seen += 1
        if seen >= BACKLOG:
            done.set()

    try:
        await nc.subscribe("expiration.complete", cb=on_complete)
        started = time.perf_counter()
        async with running(_start(base, url, "expiration-backlog")):
            await asyncio.wait_for(done.wait(), timeout=60)
            elapsed = time.perf_counter() - started
    finally:
        await nc.close()
    return {"jobs": BACKLOG, "seconds": round(elapsed, 2)}


def _start(base: Infra, url: str, name: str) -> Any:
    return start_uvicorn(
        name,
        "ticketing_expiration.app:create_app",
        base.service_env("expiration", url, OUTBOX_POLL_SECONDS="1.0"),
        base.log_path(name),
        "/readyz",
    )


async def run() -> Result:
    """Steady lateness at each pending count (one expiration worker), then the backlog drain after a restart."""
    async with infra() as base:
        url = await base.database("expiration", "ticketing_expiration")
        nc = await nats.connect(base.nats_url)
        await bus.ensure_streams(nc.jetstream())
        await nc.close()
        levels = []
        async with running(_start(base, url, "expiration")) as (_server,):
            server: ServerProcess = _server
            for pending in PENDING_COUNTS:
                level = await _steady(base, pending)
                levels.append(level)
                received = level["received"]
                say(
                    f"expiration {pending:,} pending: p50 {received['p50_ms']:.1f} ms p99 {received['p99_ms']:.1f} ms "
                    f"max {received['max_ms']:.1f} ms"
                )
            if server.proc.poll() is not None:
                raise RuntimeError(f"expiration exited:\n{server.tail()}")
        backlog = await _backlog(base, url)
        say(f"expiration backlog: {backlog['jobs']:,} due jobs drained {backlog['seconds']:.2f} s after start")
    result = Result("expiration")
    for level in levels:
        received = level["received"]
        result.rows.append(
            Row(
                figure=f"lateness with {level['pending']:,} pending (p99 ms)",
                unit="ms",
                ours=received["p99_ms"],
                ours_p50_ms=received["p50_ms"],
                ours_p99_ms=received["p99_ms"],
                target=f"p99 <= {P99_TARGET_MS:.0f} ms",
                met=received["p99_ms"] <= P99_TARGET_MS and level["early"] == 0,
            )
        )
    smallest, largest = levels[0]["received"]["p99_ms"], levels[-1]["received"]["p99_ms"]
    result.rows.append(
        Row(
            figure=f"p99 growth {PENDING_COUNTS[0]:,} -> {PENDING_COUNTS[-1]:,} pending",
            unit="ms",
            ours=largest - smallest,
            target=f"flat (<= 2x and <= +{FLAT_SLACK_MS:.0f} ms)",
            met=largest <= max(2 * smallest, smallest + FLAT_SLACK_MS),
        )
    )
    result.rows.append(
        Row(figure=f"backlog: {BACKLOG:,} due jobs, start -> last event", unit="s", ours=backlog["seconds"])
    )
    result.details = {"probes": PROBES, "spread_seconds": SPREAD, "levels": levels, "backlog": backlog}
    result.notes.append("lateness = expiration.complete received by a NATS subscriber - expiresAt (same clock)")
    return result
