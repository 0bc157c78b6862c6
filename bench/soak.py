"""`make soak`: the whole stack through its gateway for SOAK_SECONDS (600) at half its measured write capacity.

It starts `ticketing dev up` as a user would, measures how many ticket writes a second the gateway takes (closed loop,
10 s), then runs a mix of journeys at half that write rate, open loop: list a ticket and (in turn) order and pay it,
order and cancel it, order and let it expire, have a card declined, edit it and read it. It reports every error
(any answer a journey did not expect, and any transport failure), p50/p99 latency per request, and each service's
memory (RSS of its process tree) at the start and the end. Not part of `make test`: it is a figure, not a check.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.harness import RESULTS_DIR, percentile, say

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from systemkit import Stack, descendants, start_stack  # the system tests' way to run the stack

SERVICES = ("auth", "tickets", "orders", "payments", "expiration")
SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
WARMUP_SECONDS = float(os.environ.get("SOAK_WARMUP_SECONDS", "60"))
CAPACITY_SECONDS = 10.0
EXPIRATION_SECONDS = 20
WRITES_PER_JOURNEY = 3.0  # on average over the mix below (create, order, pay/cancel/...)
JOURNEYS = ("pay", "cancel", "expire", "pay", "decline", "edit")
# Enough buyers that none reaches orders' cap on open orders (MAX_OPEN_ORDERS, 10): the expired and declined
# journeys leave an order open for the expiration window, about 9 of them a second at 28 journeys a second.
BUYERS = 100


def rss_mb(stack: Stack) -> dict[str, float]:
    """Each service's resident memory, its process and everything below it, in MB."""
    found: dict[str, float] = {}
    for name in SERVICES:
        pid = stack.service_pid(name)
        total = 0
        for p in ({pid} | descendants(pid)) if pid else set():
            try:
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        found[name] = round(total / 1024, 1)
    return found


class Recorder:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        # The contract's "retry shortly" answers, by route: expected, retried after Retry-After, never errors.
        self.retried: Counter[str] = Counter()

    async def call(
        self, http: httpx.AsyncClient, method: str, path: str, expect: tuple[int, ...], **kwargs: Any
    ) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = await http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.errors[f"{method} {path.split('/')[2]}: {type(exc).__name__}"] += 1
            return None
        self.latencies.append(time.perf_counter() - started)
        self.statuses[response.status_code] += 1
        if response.status_code == 503 and 503 in expect:
            self.retried[f"{method} /api/{path.split('/')[2]}: {response.json()['errors'][0]['message'][:60]}"] += 1
        if response.status_code not in expect:
            self.errors[f"{method} /api/{path.split('/')[2]}: {response.status_code} {response.text[:80]}"] += 1
            return None
        return response


async def signup(http: httpx.AsyncClient) -> dict[str, str]:
    email = f"soak-{uuid.uuid4().hex[:12]}@example.com"
    response = await http.post("/api/users/signup", json={"email": email, "password": "correct horse battery"})
    response.raise_for_status()
    token = response.cookies["session"]
    # One client serves every user: a session cookie left in its jar would outrank each request's Bearer header,
    # and every journey would run as whoever signed up last (ordering their own tickets: a 400).
    http.cookies.clear()
    return {"Authorization": f"Bearer {token}"}


async def capacity(http: httpx.AsyncClient, seller: dict[str, str]) -> float:
    """Ticket writes a second the stack takes through the gateway, closed loop with 8 clients."""
    done = 0
    deadline = time.monotonic() + CAPACITY_SECONDS

    async def client() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            response = await http.post("/api/tickets", json={"title": "capacity", "price": 5}, headers=seller)
            if response.status_code == 201:
                done += 1

    await asyncio.gather(*(client() for _ in range(8)))
    return done / CAPACITY_SECONDS


async def journey(kind: str, http: httpx.AsyncClient, rec: Recorder, seller: dict[str, str], buyer: dict[str, str]):
    created = await rec.call(http, "POST", "/api/tickets", (201,), json={"title": "soak", "price": 12}, headers=seller)
    if created is None:
        return
    ticket_id = created.json()["id"]
    if kind == "edit":
        for _ in range(20):  # "retry shortly" while order events (other journeys' orders) are on their way to tickets
            edited = await rec.call(
                http,
                "PUT",
                f"/api/tickets/{ticket_id}",
                (200, 503),
                json={"title": "soak 2", "price": 13},
                headers=seller,
            )
            if edited is None or edited.status_code == 200:
                break
            await asyncio.sleep(float(edited.headers.get("retry-after", "1")))
        await rec.call(http, "GET", f"/api/tickets/{ticket_id}", (200,))
        return
    order = None
    for _ in range(20):  # the contract's "retry shortly" while orders has not heard of the ticket yet
        order = await rec.call(http, "POST", "/api/orders", (201, 503), json={"ticketId": ticket_id}, headers=buyer)
        if order is None or order.status_code == 201:
            break
        await asyncio.sleep(float(order.headers.get("retry-after", "1")))
    if order is None or order.status_code != 201:
        return
    order_id = order.json()["id"]
    if kind in ("pay", "decline"):
        card = "tok_visa" if kind == "pay" else "tok_chargeDeclined"
        for _ in range(20):
            paid = await rec.call(
                http, "POST", "/api/payments", (201, 402, 503), json={"token": card, "orderId": order_id}, headers=buyer
            )
            if paid is None or paid.status_code != 503:
                break
            await asyncio.sleep(float(paid.headers.get("retry-after", "1")))
    elif kind == "cancel":
        await rec.call(http, "DELETE", f"/api/orders/{order_id}", (204,), headers=buyer)
    await rec.call(http, "GET", f"/api/orders/{order_id}", (200,), headers=buyer)


async def run_journeys(
    http: httpx.AsyncClient,
    rec: Recorder,
    seller: dict[str, str],
    buyers: list[dict[str, str]],
    rate: float,
    seconds: float,
    label: str,
) -> int:
    """Start the journeys open loop at `rate` a second for `seconds`, wait for them all; returns how many."""
    tasks: set[asyncio.Task[None]] = set()
    started = time.monotonic()
    n = 0
    for n in itertools.count():
        at = started + n / rate
        if at - started >= seconds:
            break
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        task = asyncio.create_task(journey(JOURNEYS[n % len(JOURNEYS)], http, rec, seller, buyers[n % BUYERS]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if n % int(rate * 60 or 1) == 0:
            say(
                f"{label}: {time.monotonic() - started:.0f}s, {len(rec.latencies)} requests, "
                f"{sum(rec.errors.values())} errors {dict(rec.errors.most_common(3)) or ''}"
            )
    await asyncio.gather(*tasks)
    return n


async def soak(stack: Stack) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=stack.url, timeout=30, trust_env=False, limits=limits) as http:
        seller = await signup(http)
        buyers = [await signup(http) for _ in range(BUYERS)]
        write_capacity = await capacity(http, seller)
        rate = write_capacity / 2 / WRITES_PER_JOURNEY  # journeys a second
        say(f"soak: write capacity {write_capacity:.0f}/s; {rate:.1f} journeys/s for {SECONDS:.0f}s")
        # A warm-up of the same mix, not counted: the first minute grows every service's memory as each route and
        # listener runs for the first time (pools, caches, the allocator's arenas), which is not what a soak is after.
        memory_cold = rss_mb(stack)
        await run_journeys(http, Recorder(), seller, buyers, rate, WARMUP_SECONDS, "warm-up")
        await asyncio.sleep(5)  # let the warm-up's events settle before the first memory reading
        memory_start = rss_mb(stack)
        rec = Recorder()
        started = time.monotonic()
        n = await run_journeys(http, rec, seller, buyers, rate, SECONDS, "soak")
        elapsed = time.monotonic() - started
        memory_end = rss_mb(stack)
    latencies = sorted(rec.latencies)
    return {
        "seconds": round(elapsed, 1),
        "write_capacity_per_s": round(write_capacity, 1),
        "journeys": n,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "errors": sum(rec.errors.values()),
        "error_kinds": dict(rec.errors.most_common(10)),
        "statuses": {str(k): v for k, v in sorted(rec.statuses.items())},
        "retried_503": dict(rec.retried.most_common()),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "warmup_seconds": WARMUP_SECONDS,
        "memory_mb_before_warmup": memory_cold,
        "memory_mb_start": memory_start,
        "memory_mb_end": memory_end,
        "memory_growth_pct": {
            k: round((memory_end[k] - memory_start[k]) / memory_start[k] * 100, 1) if memory_start[k] else None
            for k in SERVICES
        },
        "cpus": os.cpu_count(),
        "load_average_end": os.getloadavg(),
    }


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="ticketing-soak-"))
    os.chmod(base, 0o755)
    stack = start_stack(base / "state", {"ORDER_EXPIRATION_SECONDS": str(EXPIRATION_SECONDS), "LOG_LEVEL": "WARNING"})
    try:
        result = asyncio.run(soak(stack))
    finally:
        stack.stop()
        shutil.rmtree(base, ignore_errors=True)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
