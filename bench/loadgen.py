"""A small HTTP/1.1 load generator: keep-alive connections on asyncio protocols, closed loop or open loop.

It is lean on purpose (no HTTP library in the request path, one preformatted request per call, responses parsed
just enough to find their end), so that it is not the bottleneck on a two-core machine; `ceiling()` measures how
many requests a second it can drive against a trivial server, and every HTTP benchmark reports that figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.harness import percentile

RequestFactory = Callable[[], bytes]


def request_bytes(method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 keep-alive request."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("connection closed"))
        self.waiter = None
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        length = 0
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        self.waiter = None
        waiter.set_result((status, body))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.transport is None:
            raise ConnectionError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(host: str, port: int) -> _Connection:
    """Open one keep-alive connection."""
    _, protocol = await asyncio.get_running_loop().create_connection(_Connection, host, port)
    return protocol


@dataclass
class LoadResult:
    """Requests done in a window, their latencies (ms) and status counts."""

    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0

    @property
    def count(self) -> int:
        return len(self.latencies_ms)

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def rate(self) -> float:
        """Successful responses per second."""
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 0.50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 0.99)

    def summary(self) -> dict[str, float | int | dict[int, int]]:
        return {
            "rate": round(self.rate, 1),
            "requests": self.count,
            "p50_ms": round(self.p50, 3),
            "p99_ms": round(self.p99, 3),
            "statuses": self.statuses,
            "errors": self.errors,
        }


async def closed_loop(
    host: str, port: int, make_request: RequestFactory, *, concurrency: int, seconds: float, warmup: float = 1.0
) -> LoadResult:
    """`concurrency` connections each send a request as soon as the previous answer arrives, for `seconds`.

    The first `warmup` seconds run the same load but are not counted (connection set-up, caches, JIT of the pool).
    """
    conns = await asyncio.gather(*(connect(host, port) for _ in range(concurrency)))
    loop_time = time.perf_counter
    start = loop_time()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    result = LoadResult(seconds)
    latencies = result.latencies_ms
    statuses = result.statuses

    async def worker(conn: _Connection) -> None:
        while True:
            sent = loop_time()
            if sent >= stop_at:
                return
            try:
                status, _ = await conn.request(make_request())
            except (ConnectionError, OSError):
                result.errors += 1
                return
            if sent >= measure_from:
                latencies.append((loop_time() - sent) * 1000)
                statuses[status] = statuses.get(status, 0) + 1

    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for conn in conns:
            conn.close()
    return result


OnResponse = Callable[[int, bytes, float], None]


async def open_loop(
    host: str,
    port: int,
    make_request: RequestFactory,
    *,
    rate: float,
    seconds: float,
    on_response: OnResponse | None = None,
    connections: int = 32,
) -> LoadResult:
    """Send `rate` requests a second on a fixed schedule for `seconds`, whatever the server's pace.

    Latency counts from the scheduled time (no coordinated omission); `on_response(status, body, received_at)`
    sees each answer with its perf_counter arrival time.
    """
    idle: asyncio.Queue[_Connection] = asyncio.Queue()
    for conn in await asyncio.gather(*(connect(host, port) for _ in range(connections))):
        idle.put_nowait(conn)
    result = LoadResult(seconds)
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05
    tasks: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        conn = await idle.get()
        try:
            status, body = await conn.request(make_request())
        except (ConnectionError, OSError):
            result.errors += 1
            conn = await connect(host, port)
        else:
            received = time.perf_counter()
            result.latencies_ms.append((received - scheduled) * 1000)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if on_response is not None:
                on_response(status, body, received)
        idle.put_nowait(conn)

    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().close()
    return result


# ---------------------------------------------------------------------------------------------------------------
# The load generator's own ceiling: a trivial HTTP server that answers every request with a fixed response


_TRIVIAL_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


class _TrivialServer(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        data = self.pending + data
        count = data.count(b"\r\n\r\n")  # GETs without a body: one blank line per request
        self.pending = data[data.rfind(b"\r\n\r\n") + 4 :] if count else data
        if count:
            self.transport.write(_TRIVIAL_RESPONSE * count)


async def serve_trivial(port: int) -> None:
    """Answer every request on 127.0.0.1:port with 200 "ok" until cancelled."""
    server = await asyncio.get_running_loop().create_server(_TrivialServer, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main_trivial(port: int) -> None:
    """Entry point of the trivial server's own process (`python -m bench.loadgen PORT`)."""
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve_trivial(port))


if __name__ == "__main__":
    import sys

    main_trivial(int(sys.argv[1]))
