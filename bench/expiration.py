"""Benchmark: how late expiration.complete fires with thousands of pending jobs, and how fast a backlog drains.

Run: `.venv/bin/python services/expiration/bench/lateness.py [--jobs 10000] [--spread 10]`. It starts its own
Postgres and nats-server on free loopback ports (like the test plugin), runs one expiration app, and prints:

- steady: N order.created events published through NATS with expiresAt spread evenly over `--spread` seconds,
  starting after every job is stored; lateness = when the event reached a subscriber (and, separately, the row's
  fired_at) minus expiresAt. The contract allows 1 s; the target is p99 <= 500 ms.
- backlog: N jobs that fell due while the service was down; the time from start-up until the last event arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import nats
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from ticketing_common import bus
from ticketing_common.devservers import NatsServer, PostgresServer
from ticketing_common.events import OrderCreated, OrderStatus, OrderTicket
from ticketing_common.migrations import upgrade
from ticketing_expiration.app import create_app
from ticketing_expiration.settings import Settings


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(name: str, lateness_ms: list[float]) -> str:
    return (
        f"{name}: n={len(lateness_ms)} p50={percentile(lateness_ms, 0.5):.1f}ms p99={percentile(lateness_ms, 0.99):.1f}ms "
        f"max={max(lateness_ms):.1f}ms mean={statistics.fmean(lateness_ms):.1f}ms min={min(lateness_ms):.1f}ms"
    )


async def steady(url: str, nats_url: str, jobs: int, spread: float) -> None:
    settings = Settings(
        environment="test",
        database_url=url,
        nats_url=nats_url,
        nats_client_id="expiration-bench",
        jwt_key="bench-only-jwt-key-0123456789abcdef",
        log_level="WARNING",
        outbox_poll_seconds=1.0,
    )
    nc = await nats.connect(nats_url)
    await bus.ensure_streams(nc.jetstream())
    arrived: dict[str, float] = {}
    done = asyncio.Event()

    async def on_complete(msg: nats.aio.msg.Msg) -> None:
        arrived.setdefault(json.loads(msg.data)["orderId"], time.time())
        if len(arrived) >= jobs:
            done.set()

    await nc.subscribe("expiration.complete", cb=on_complete)
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
        js = nc.jetstream()
        # Leave time to publish and store every job first, so all N are pending when the first falls due.
        first_due = datetime.now(UTC) + timedelta(seconds=max(8.0, jobs / 400))
        expires: dict[str, float] = {}
        started = time.perf_counter()
        for i in range(jobs):
            event = OrderCreated(
                id=uuid.uuid4(),
                version=0,
                status=OrderStatus.CREATED,
                user_id=uuid.uuid4(),
                expires_at=first_due + timedelta(seconds=spread * i / jobs),
                ticket=OrderTicket(id=uuid.uuid4(), price=Decimal("10.00")),
            )
            expires[str(event.id)] = event.expires_at.timestamp()
            await js.publish_async(event.subject, event.to_bytes(), headers={"Nats-Msg-Id": str(event.event_id)})
        await js.publish_async_completed()
        print(f"published {jobs} order.created in {time.perf_counter() - started:.1f}s", flush=True)
        engine = create_async_engine(url)
        async with engine.connect() as conn:
            while True:
                pending = (await conn.execute(text("SELECT count(*) FROM expiration_jobs"))).scalar_one()
                await conn.commit()
                if pending >= jobs or time.time() > first_due.timestamp():
                    break
                await asyncio.sleep(0.1)
        print(f"{pending} jobs stored {first_due.timestamp() - time.time():.1f}s before the first is due", flush=True)
        await asyncio.wait_for(done.wait(), timeout=spread + 120)
        async with engine.connect() as conn:
            fired = (
                await conn.execute(text("SELECT extract(epoch FROM fired_at - expires_at) * 1000 FROM expiration_jobs"))
            ).scalars()
            fired_ms = [float(v) for v in fired]
        await engine.dispose()
    await nc.close()
    received_ms = [(arrived[k] - expires[k]) * 1000 for k in expires]
    print(summary(f"steady {jobs} jobs over {spread:.0f}s, fired_at - expiresAt", fired_ms))
    print(summary(f"steady {jobs} jobs over {spread:.0f}s, event received - expiresAt", received_ms))
    early = sum(1 for v in received_ms if v < 0)
    print(f"events received before expiresAt: {early}")


async def backlog(url: str, nats_url: str, jobs: int) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE expiration_jobs, outbox, inbox"))
        await conn.execute(
            text(
                "INSERT INTO expiration_jobs (order_id, version, expires_at) "
                "SELECT gen_random_uuid(), 0, now() - interval '1 minute' FROM generate_series(1, :n)"
            ),
            {"n": jobs},
        )
    await engine.dispose()
    nc = await nats.connect(nats_url)
    seen = 0
    done = asyncio.Event()

    async def on_complete(msg: nats.aio.msg.Msg) -> None:
        nonlocal seen
        seen += 1
        if seen >= jobs:
            done.set()

    await nc.subscribe("expiration.complete", cb=on_complete)
    settings = Settings(
        environment="test",
        database_url=url,
        nats_url=nats_url,
        nats_client_id="expiration-bench-2",
        jwt_key="bench-only-jwt-key-0123456789abcdef",
        log_level="WARNING",
    )
    started = time.perf_counter()
    async with LifespanManager(create_app(settings), startup_timeout=60, shutdown_timeout=60):
        await asyncio.wait_for(done.wait(), timeout=300)
        elapsed = time.perf_counter() - started
    await nc.close()
    print(f"backlog: {jobs} jobs due while down, all events received {elapsed:.2f}s after start-up")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=10.0, help="seconds over which the jobs fall due")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="expiration-bench-"))
    os.chmod(base, 0o755)
    postgres, nats_server = PostgresServer(base / "pg"), NatsServer(base / "nats")
    try:
        postgres.start()
        nats_server.start()
        url = postgres.create_database("bench_expiration")
        await asyncio.to_thread(upgrade, "ticketing_expiration", url)
        await steady(url, nats_server.url, args.jobs, args.spread)
        await backlog(url, nats_server.url, args.jobs)
    finally:
        nats_server.stop()
        postgres.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
