"""A loopback TCP proxy in front of a real server, to take the network away from a service under test.

The server stays real (our Postgres, our nats-server); only the wire between it and the service is ours to cut,
so a test can show what a service does while its database or broker is unreachable, and after it comes back,
without stopping the servers every other test shares.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; cut() drops every connection and refuses new ones until restore().

    With hold_server_close, a connection the server closes stays open towards the client (its last bytes are
    delivered, the close is not) until release_held() or cut(): a FIN that arrives late, as over a slow network.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.refusing = False
        self.hold_server_close = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._held: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def for_url(cls, url: str) -> TcpProxy:
        """A proxy for the host and port of a URL (postgresql+asyncpg://..., nats://...)."""
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 0)

    def url(self, url: str) -> str:
        """The same URL, pointing at this proxy."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close everything."""
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        """Drop every open connection (both ends see a reset) and refuse new ones."""
        self.refusing = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        self._held.clear()

    def restore(self) -> None:
        """Accept connections again."""
        self.refusing = False

    @property
    def holding(self) -> bool:
        """Whether a server's close is being held back from its client."""
        return bool(self._held)

    def release_held(self) -> None:
        """Deliver the closes held back by hold_server_close."""
        for writer in list(self._held):
            writer.transport.abort()
        self._held.clear()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            client_writer.transport.abort()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, server_writer))
        upstream = asyncio.create_task(self._pipe(client_reader, server_writer, hold=False))
        downstream = asyncio.create_task(self._pipe(server_reader, client_writer, hold=True))
        self._tasks.update((upstream, downstream))
        for task in (upstream, downstream):
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, hold: bool) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        if hold and self.hold_server_close and writer in self._writers:
            self._held.add(writer)
            return
        writer.transport.abort()
        self._writers.discard(writer)
