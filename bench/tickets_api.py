"""write and read: POST and GET /api/tickets on one tickets worker against bare FastAPI + asyncpg endpoints.

Both servers run side by side on the same Postgres (the tickets database) and NATS; the load alternates between
them, round after round, with the same closed-loop load generator, and each side's figure is the median of its
rounds. The load generator's own ceiling against a trivial server is measured in the same run.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from bench import loadgen
from bench.harness import (
    PROFILE,
    PYTHON,
    ROUNDS,
    SECONDS,
    Infra,
    Result,
    Row,
    ServerProcess,
    cpu_seconds,
    free_port,
    infra,
    median,
    py_spy,
    running,
    say,
    spawn,
    start_uvicorn,
    summarize_profile,
    wait_http_ok,
)
from ticketing_common.testing import make_user

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "16"))
TARGET_RATIO = 0.5
SEED_TICKETS = 2000
_BODY = json.dumps({"title": "Concert at the lake", "price": 25.5}).encode()


async def _trivial_server(base: Infra) -> ServerProcess:
    port = free_port()
    server = spawn(
        "trivial", [PYTHON, "-m", "bench.loadgen", str(port)], dict(os.environ), base.log_path("trivial"), port
    )
    await wait_http_ok(server, "/")
    return server


async def _ceiling(server: ServerProcess) -> loadgen.LoadResult:
    """What the load generator drives against a server that does nothing."""
    request = loadgen.request_bytes("GET", "/")
    return await loadgen.closed_loop(
        "127.0.0.1", server.port, lambda: request, concurrency=CONCURRENCY, seconds=min(SECONDS, 3.0)
    )


async def _measure(
    server: ServerProcess, make_request: loadgen.RequestFactory, profile: str | None = None
) -> tuple[loadgen.LoadResult, float]:
    """One round of closed-loop load; also the server's CPU use in cores over the round."""
    cpu_before, wall_before = cpu_seconds(server.pid), time.perf_counter()
    spy = await py_spy(server.pid, SECONDS, profile) if profile else None
    result = await loadgen.closed_loop("127.0.0.1", server.port, make_request, concurrency=CONCURRENCY, seconds=SECONDS)
    cores = (cpu_seconds(server.pid) - cpu_before) / (time.perf_counter() - wall_before)
    if spy is not None:
        await spy.wait()
        say(summarize_profile(profile or ""))
    return result, cores


async def _alternate(
    name: str,
    ours: tuple[ServerProcess, loadgen.RequestFactory],
    baseline: tuple[ServerProcess, loadgen.RequestFactory],
) -> dict[str, list[dict[str, Any]]]:
    """ROUNDS rounds of ours and the baseline, swapping which goes first each round."""
    rounds: dict[str, list[dict[str, Any]]] = {"ours": [], "baseline": []}
    for i in range(ROUNDS):
        order = [("ours", ours), ("baseline", baseline)]
        if i % 2:
            order.reverse()
        for side, (server, make_request) in order:
            profile = f"{name}-{side}-profile" if PROFILE and i == ROUNDS - 1 else None
            result, cores = await _measure(server, make_request, profile)
            if result.ok == 0:
                raise RuntimeError(f"{name} {side}: no successful response ({result.statuses}):\n{server.tail()}")
            rounds[side].append(result.summary() | {"server_cores": round(cores, 2)})
            say(
                f"{name} round {i + 1} {side}: {result.rate:,.0f} req/s p50 {result.p50:.2f} ms p99 {result.p99:.2f} ms"
            )
    return rounds


def _row(figure: str, rounds: dict[str, list[dict[str, Any]]]) -> Row:
    ours = median([r["rate"] for r in rounds["ours"]])
    base = median([r["rate"] for r in rounds["baseline"]])
    return Row(
        figure=figure,
        unit="req/s",
        ours=ours,
        baseline=base,
        ours_p50_ms=median([r["p50_ms"] for r in rounds["ours"]]),
        ours_p99_ms=median([r["p99_ms"] for r in rounds["ours"]]),
        baseline_p50_ms=median([r["p50_ms"] for r in rounds["baseline"]]),
        baseline_p99_ms=median([r["p99_ms"] for r in rounds["baseline"]]),
        target=f">= {TARGET_RATIO:.0%} of baseline",
        met=bool(base) and ours / base >= TARGET_RATIO,
    )


def _ceiling_row(ceiling: loadgen.LoadResult, fastest: float) -> Row:
    return Row(
        figure="load generator ceiling (trivial server)",
        unit="req/s",
        ours=ceiling.rate,
        ours_p50_ms=ceiling.p50,
        ours_p99_ms=ceiling.p99,
        target=">= 2x the fastest side",
        met=ceiling.rate >= 2 * fastest,
    )


async def _with_servers(
    run: Callable[[Infra, ServerProcess, ServerProcess, ServerProcess], Awaitable[Result]],
) -> Result:
    async with infra() as base:
        url = await base.database("tickets", "ticketing_tickets")
        async with running(
            start_uvicorn(
                "tickets",
                "ticketing_tickets.app:create_app",
                base.service_env("tickets", url),
                base.log_path("tickets"),
                "/readyz",
            ),
            start_uvicorn(
                "raw", "bench.rawapp:create_app", base.service_env("raw", url), base.log_path("raw"), "/raw/ping"
            ),
            _trivial_server(base),
        ) as (tickets, raw, trivial):
            return await run(base, tickets, raw, trivial)


async def run_write() -> Result:
    """POST /api/tickets signed in (validation, the row and its outbox event in one transaction) vs one insert."""

    async def run(base: Infra, tickets: ServerProcess, raw: ServerProcess, trivial: ServerProcess) -> Result:
        user = make_user()
        ours_request = loadgen.request_bytes("POST", "/api/tickets", body=_BODY, headers=user.headers)
        raw_request = loadgen.request_bytes("POST", "/raw/tickets", body=_BODY)
        ceiling = await _ceiling(trivial)
        say(f"load generator ceiling: {ceiling.rate:,.0f} req/s")
        rounds = await _alternate("write", (tickets, lambda: ours_request), (raw, lambda: raw_request))
        result = Result("write")
        row = _row("POST /api/tickets vs one asyncpg insert", rounds)
        result.rows = [row, _ceiling_row(ceiling, max(row.ours, row.baseline or 0))]
        result.details = {"concurrency": CONCURRENCY, "rounds": rounds, "ceiling": ceiling.summary()}
        conn = await asyncpg.connect(base.dsn("tickets"))
        try:
            outbox = await conn.fetchval("SELECT count(*) FROM outbox")
            unsent = await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        finally:
            await conn.close()
        result.notes.append(f"{outbox} ticket.created events staged, {unsent} not yet published when the run ended")
        return result

    return await _with_servers(run)


async def run_read() -> Result:
    """GET /api/tickets/{id} vs one asyncpg select of the same rows."""

    async def run(base: Infra, tickets: ServerProcess, raw: ServerProcess, trivial: ServerProcess) -> Result:
        conn = await asyncpg.connect(base.dsn("tickets"))
        try:
            ids = [uuid.uuid4() for _ in range(SEED_TICKETS)]
            await conn.executemany(
                "INSERT INTO tickets (id, title, price, user_id, version) VALUES ($1, 'Seeded', 10.00, $2, 0)",
                [(i, uuid.uuid4()) for i in ids],
            )
        finally:
            await conn.close()
        ours_requests = itertools.cycle([loadgen.request_bytes("GET", f"/api/tickets/{i}") for i in ids])
        raw_requests = itertools.cycle([loadgen.request_bytes("GET", f"/raw/tickets/{i}") for i in ids])
        ceiling = await _ceiling(trivial)
        say(f"load generator ceiling: {ceiling.rate:,.0f} req/s")
        rounds = await _alternate("read", (tickets, ours_requests.__next__), (raw, raw_requests.__next__))
        result = Result("read")
        row = _row("GET /api/tickets/{id} vs one asyncpg select", rounds)
        result.rows = [row, _ceiling_row(ceiling, max(row.ours, row.baseline or 0))]
        result.details = {"concurrency": CONCURRENCY, "rounds": rounds, "ceiling": ceiling.summary()}
        return result

    return await _with_servers(run)
