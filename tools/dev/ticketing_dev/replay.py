"""`ticketing replay SERVICE`: rebuild a service's replicas from the start of the streams, then swap them in.

The service keeps running and answering throughout. The rebuild happens beside it, in a scratch schema of its own
database (`replay_<service>`): a copy of every table of the service, its replicas empty and its own tables as they are
now, with a scratch inbox and outbox. The service's own listener code applies every event of the streams it consumes,
from the first, through ephemeral ordered consumers (the service's durables are left alone), with the scratch inbox
deduplicating and the version rule ordering, exactly as live; whatever the handlers write elsewhere or publish stays
in the scratch schema and is thrown away. Then, in one transaction on the live tables: the replicas are locked against
writers (readers go on), the events that arrived meanwhile are applied too, and each replica is made equal to its
rebuilt copy (rows the stream does not justify are deleted, the others inserted or updated), keeping the columns the
service declares as its own bookkeeping. Live listeners wait for the lock, then find their event applied (the version
rule acks it) or apply it on top.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import ValidationError
from sqlalchemy import MetaData, Table, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from ticketing_common.app import ServiceSpec
from ticketing_common.db import BUS_METADATA, asyncpg_dsn, make_sessionmaker
from ticketing_common.events import STREAMS, stream_for
from ticketing_common.listener import EventOutOfOrder, Listener
from ticketing_common.requestid import set_request_id
from ticketing_common.uow import Database
from ticketing_dev.deadletters import service_listeners, service_spec

_CLAIM = "INSERT INTO inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING message_id"


class ReplayError(Exception):
    """Why a replay stopped; the live tables are unchanged."""


@dataclass
class ReplayReport:
    """What a replay did."""

    service: str
    applied: int = 0
    duplicates: int = 0
    # Events the live consumers would also have set aside: unreadable, or whose predecessor never came.
    skipped: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Rebuild:
    """The scratch schema and the service's listeners applying the streams into it."""

    def __init__(self, spec: ServiceSpec, url: str, js: JetStreamContext, note: Callable[[str], None]) -> None:
        self.spec = spec
        self.url = url
        self.js = js
        self.note = note
        self.schema = f"replay_{spec.name}"
        self.metadata: MetaData = importlib.import_module(f"ticketing_{spec.name}.models").Base.metadata
        self.report = ReplayReport(spec.name)
        self.positions: dict[str, int] = {}  # stream -> last sequence applied
        self.pending: list[tuple[Listener[Any], Msg]] = []
        self.engine = create_async_engine(url, connect_args={"server_settings": {"search_path": self.schema}})
        self.pool: asyncpg.Pool | None = None
        self.listeners: dict[str, Listener[Any]] = {}

    def replica_tables(self) -> list[Table]:
        """The declared replicas, as tables of the service's models."""
        missing = [name for name in self.spec.replicas if name not in self.metadata.tables]
        if missing:
            raise ReplayError(f"{self.spec.name} declares replicas it has no table for: {', '.join(missing)}")
        return [self.metadata.tables[name] for name in self.spec.replicas]

    async def prepare(self, live: AsyncConnection) -> None:
        """A fresh scratch schema: every table of the service, no foreign keys, its own tables copied."""
        schema = _q(self.schema)
        await live.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        await live.execute(text(f"CREATE SCHEMA {schema}"))
        scratch = await live.execution_options(schema_translate_map={None: self.schema})
        await scratch.run_sync(self.metadata.create_all)
        await scratch.run_sync(BUS_METADATA.create_all)
        # Copies of the service's own tables would break its foreign keys into the (empty) replicas.
        for table_name, constraint in (
            await live.execute(
                text(
                    "SELECT conrelid::regclass::text, conname FROM pg_constraint "
                    "WHERE contype = 'f' AND connamespace = CAST(:schema AS regnamespace)"
                ),
                {"schema": self.schema},
            )
        ).all():
            await live.execute(text(f"ALTER TABLE {table_name} DROP CONSTRAINT {_q(constraint)}"))
        for table in self.metadata.sorted_tables:
            if table.name in self.spec.replicas:
                continue
            columns = ", ".join(_q(c.name) for c in table.columns)
            await live.execute(
                text(f"INSERT INTO {schema}.{_q(table.name)} ({columns}) SELECT {columns} FROM public.{_q(table.name)}")
            )

    async def open(self) -> None:
        """The service's listeners over the scratch schema."""
        self.pool = await asyncpg.create_pool(
            asyncpg_dsn(self.url), min_size=1, max_size=2, server_settings={"search_path": self.schema}
        )
        database = Database(self.engine, make_sessionmaker(self.engine), self.pool)
        self.listeners = {listener.subject: listener for listener in service_listeners(self.spec, database)}

    async def close(self) -> None:
        """Release the scratch connections."""
        if self.pool is not None:
            await self.pool.close()
        await self.engine.dispose()

    async def consume(self) -> None:
        """Apply every stream the service consumes from where this replay stands to its current end."""
        for stream in sorted({stream_for(subject) for subject in self.listeners}):
            await self._consume_stream(stream)
        await self._retry_pending(final=True)

    async def _consume_stream(self, stream: str) -> None:
        start = self.positions.get(stream, 0) + 1
        try:
            info = await self.js.stream_info(stream)
        except NotFoundError:
            return
        if start == 1 and info.state.first_seq > 1:
            # A max age (NATS_STREAM_MAX_AGE_SECONDS), a limit or a purge dropped the stream's first events: what
            # they created cannot be rebuilt, so a rebuild would lose it from the replica.
            raise ReplayError(
                f"the {stream} stream no longer starts at its first event (it starts at #{info.state.first_seq}); "
                "a replay would lose what the dropped events created, so nothing was changed"
            )
        if info.state.last_seq < start or info.state.messages == 0:
            return
        sub = await self.js.subscribe(
            STREAMS[stream][0],
            stream=stream,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start),
            manual_ack=True,
        )
        try:
            while True:
                msg = await sub.next_msg(timeout=10)
                meta = msg.metadata
                listener = self.listeners.get(msg.subject)
                if listener is not None:
                    await self._apply(listener, msg)
                self.positions[stream] = meta.sequence.stream
                if meta.num_pending == 0:
                    break
        except TimeoutError:
            raise ReplayError(f"{stream} stopped delivering before its end; nothing was swapped") from None
        finally:
            await sub.unsubscribe()

    async def _apply(self, listener: Listener[Any], msg: Msg, *, retrying: bool = False) -> bool:
        """Apply one event as the live listener would; False when its predecessor has not been applied yet."""
        message_id = listener.message_id(msg)
        try:
            event = listener.event_type.model_validate_json(msg.data)
        except ValidationError:
            self.report.skipped.append(f"{msg.subject} {message_id}: invalid payload")
            return True
        try:
            async with listener.database.transaction() as uow:
                conn = await uow.connection()
                if await conn.fetchval(_CLAIM, listener.durable, message_id) is None:
                    self.report.duplicates += 1
                    return True
                set_request_id(msg.headers.get("X-Request-ID") if msg.headers else None)
                await listener.handle(event, uow)
        except EventOutOfOrder:
            if not retrying:
                self.pending.append((listener, msg))
            return False
        self.report.applied += 1
        if not retrying and self.pending:
            await self._retry_pending()
        return True

    async def _retry_pending(self, *, final: bool = False) -> None:
        """Apply the waiting events whose predecessor has come; at the end, the rest are reported."""
        progress = True
        while progress and self.pending:
            progress = False
            for item in list(self.pending):
                if item in self.pending and await self._apply(*item, retrying=True):
                    self.pending.remove(item)
                    progress = True
        if final:
            for listener, msg in self.pending:
                self.report.skipped.append(f"{msg.subject} {listener.message_id(msg)}: its predecessor never came")
            self.pending.clear()

    async def swap(self, live: AsyncConnection) -> None:
        """Make each live replica equal to its rebuilt copy, under a lock that lets readers through."""
        tables = self.replica_tables()
        for table in tables:
            # EXCLUSIVE: writers (the live listeners) wait; plain reads, the routes' GETs, go on.
            await live.execute(text(f"LOCK TABLE public.{_q(table.name)} IN EXCLUSIVE MODE"))
        await self.consume()  # what arrived since the rebuild read the streams
        for table in tables:
            kept = set(self.spec.replicas[table.name])
            name, scratch = f"public.{_q(table.name)}", f"{_q(self.schema)}.{_q(table.name)}"
            key = ", ".join(_q(c.name) for c in table.primary_key)
            columns = [c.name for c in table.columns]
            await live.execute(text(f"DELETE FROM {name} WHERE ({key}) NOT IN (SELECT {key} FROM {scratch})"))
            updates = ", ".join(
                f"{_q(c)} = coalesce({name}.{_q(c)}, EXCLUDED.{_q(c)})" if c in kept else f"{_q(c)} = EXCLUDED.{_q(c)}"
                for c in columns
                if c not in {col.name for col in table.primary_key}
            )
            listed = ", ".join(_q(c) for c in columns)
            await live.execute(
                text(
                    f"INSERT INTO {name} ({listed}) SELECT {listed} FROM {scratch} ON CONFLICT ({key}) "
                    f"DO UPDATE SET {updates}"
                )
            )
            count = (await live.execute(text(f"SELECT count(*) FROM {name}"))).scalar_one()
            self.report.rows[table.name] = int(count)


async def replay_service(
    service: str, url: str, js: JetStreamContext, *, note: Callable[[str], None] = lambda _: None
) -> ReplayReport:
    """Rebuild the service's declared replicas from the streams and swap them in; the live tables change only at
    the end, in one transaction."""
    spec = service_spec(service, url)
    if not spec.replicas:
        raise ReplayError(f"{service} declares no replica tables")
    rebuild = _Rebuild(spec, url, js, note)
    rebuild.replica_tables()
    live_engine = create_async_engine(url)
    try:
        async with live_engine.begin() as live:
            await rebuild.prepare(live)
        await rebuild.open()
        note(f"rebuilding {', '.join(spec.replicas)} of {service} in the schema {rebuild.schema}")
        await rebuild.consume()
        async with live_engine.begin() as live:
            await rebuild.swap(live)
        return rebuild.report
    except (asyncpg.PostgresError, DBAPIError) as exc:
        reason = str(getattr(exc, "orig", exc)).splitlines()[0]
        raise ReplayError(f"the database refused the replay: {reason}; the live tables are unchanged") from None
    finally:
        await rebuild.close()
        async with live_engine.begin() as live:
            await live.execute(text(f"DROP SCHEMA IF EXISTS {_q(rebuild.schema)} CASCADE"))
        await live_engine.dispose()
