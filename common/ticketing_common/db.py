"""Async engine and sessions, the one model base factory, and the bus tables every service database holds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy import (
    BigInteger,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    event,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

logger = logging.getLogger("ticketing.db")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


TYPE_ANNOTATION_MAP: dict[Any, Any] = {datetime: DateTime(timezone=True)}


def model_registry() -> type[DeclarativeBase]:
    """A fresh declarative base with the shared naming convention and type map: every service's one model base.

    Each call is a registry of its own, so two services' same-named tables (orders' `tickets` replica and tickets'
    `tickets`) stay apart when one process imports both, as the cross-service tests do.
    """

    class Base(DeclarativeBase):
        metadata = MetaData(naming_convention=NAMING_CONVENTION)
        type_annotation_map = TYPE_ANNOTATION_MAP

    return Base


if TYPE_CHECKING:  # mypy cannot subclass a base made by a call; this is what model_registry() returns

    class BusModel(DeclarativeBase):
        """The bus tables' registry."""

else:
    BusModel = model_registry()

# The bus tables, declared once here: services compare against them, and their migration is built from them.
BUS_METADATA: MetaData = BusModel.metadata


class OutboxEvent(BusModel):
    """An event committed with the state change that caused it, waiting for the relay to publish it."""

    __tablename__ = "outbox"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # Commit order: a later transaction on the same entity always inserts its event after the earlier commit.
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True))
    subject: Mapped[str] = mapped_column(String(200))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    request_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    sent_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_outbox_unsent", "seq", postgresql_where=text("sent_at IS NULL")),)


class InboxRecord(BusModel):
    """Proof that a consumer handled a message; committed with the handler's changes."""

    __tablename__ = "inbox"

    consumer: Mapped[str] = mapped_column(String(200), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(server_default=func.now())


class DeadLetter(BusModel):
    """An event a consumer gave up on: an invalid payload, or one past max_deliver.

    An operator resolves it (`ticketing deadletters retry|drop`): the row stays, with who did what, when and why.
    """

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    consumer: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(200))
    message_id: Mapped[str | None] = mapped_column(String(200))
    # A JetStream stream sequence is a uint64.
    stream_sequence: Mapped[int | None] = mapped_column(BigInteger)
    deliveries: Mapped[int]
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    resolved_at: Mapped[datetime | None]
    # "retried" (applied through the consumer's handler) or "dropped"; NULL while it waits for an operator.
    resolution: Mapped[str | None] = mapped_column(String(20))
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    resolution_note: Mapped[str | None] = mapped_column(Text)


class ParkedEvent(BusModel):
    """An event that arrived before its predecessor: acked, kept here, and applied once the predecessor has been.

    Parked rather than nak'd, so that a burst of gaps cannot hold up the other entities' events on its consumer;
    one never resolved within PARKED_MAX_AGE_SECONDS becomes a dead letter (ticketing_common.parking).
    """

    __tablename__ = "parked_events"

    consumer: Mapped[str] = mapped_column(String(200), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    # The entity whose predecessor it waits for (Event.entity_key): applying any event of it tries these again.
    entity: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(200))
    # Publish order, in which an entity's waiting events are applied.
    stream_sequence: Mapped[int | None] = mapped_column(BigInteger)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    reason: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    parked_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # When the periodic retry tries it next (the backstop for a predecessor another replica applied).
    retry_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        Index("ix_parked_events_entity", "entity"),
        Index("ix_parked_events_retry_at", "retry_at"),
    )


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under the session's current transaction, for hot paths.

    Statements on it run in the same transaction as the session's, without the ORM's per-statement cost
    (about 4x cheaper here); use it where a handler runs thousands of times a second.
    """
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    if not driver.is_in_transaction():
        # SQLAlchemy sends BEGIN lazily, with its first statement; without this, our statements would autocommit.
        # Its asyncpg adapter's own BEGIN is one round trip; a `SELECT 1` through the session was two, plus the
        # session's statement machinery, on every listener transaction (bench/). The SELECT stays as the fallback
        # should a SQLAlchemy upgrade rename that private method (the tests below would tell).
        adapter = raw.dbapi_connection
        start = getattr(adapter, "_start_transaction", None)
        if start is not None and getattr(adapter, "_transaction", True) is None:
            await start()
        else:
            await session.execute(text("SELECT 1"))
    return driver


def asyncpg_dsn(url: str) -> str:
    """The plain postgresql:// DSN asyncpg wants, from a SQLAlchemy postgresql+asyncpg:// URL."""
    return "postgresql://" + url.split("://", 1)[1]


async def listen_forever(
    engine: AsyncEngine, channel: str, on_notify: Callable[[str], None], *, on_connect: Callable[[], None]
) -> None:
    """Hold a LISTEN on a channel until cancelled, reconnecting after failures (a Postgres restart, say).

    on_notify gets each payload; on_connect runs after every (re)connect, so the caller can catch up on what was
    committed while nobody listened.
    """
    dsn = asyncpg_dsn(engine.url.render_as_string(hide_password=False))
    while True:
        conn = None
        try:
            conn = await asyncpg.connect(dsn)
            await conn.add_listener(channel, lambda _conn, _pid, _channel, payload: on_notify(payload))
            on_connect()
            while not conn.is_closed():
                await asyncio.sleep(1)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("LISTEN %s failed: %s", channel, exc)
            await asyncio.sleep(1)
        finally:
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), timeout=2)


def _discard_closed_connection(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
    """Pool checkout: a connection whose socket the server closed (a restart) is replaced, not handed out.

    The equivalent of pool_pre_ping at no cost: asyncpg already saw the server's FIN on the event loop, so asking it
    costs no round trip. SQLAlchemy retries the checkout with a fresh connection on DisconnectionError.
    """
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and driver.is_closed():
        raise DisconnectionError("connection closed by the server")


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An asyncpg engine whose first request after a database restart succeeds.

    No pre-ping: with asyncpg it costs three round trips per checkout (BEGIN, ping, ROLLBACK), which doubled the
    cost of a read. Instead a checkout hook drops connections asyncpg already knows are closed (a restarted Postgres
    closes every session's socket), for free. A statement that still meets a dead connection (a silent network
    drop) fails with an outage error, which SQLAlchemy answers by invalidating the pool, and the request with a 503.

    pool_timeout: a request waits at most this long for a connection before its 503, not SQLAlchemy's 30 s.
    hide_parameters: a statement's parameters (an email, a password hash) never reach an exception's text, and so
    never a log line.
    """
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=20,
        pool_recycle=1800,
        pool_timeout=10,
        hide_parameters=True,
        connect_args={"timeout": 5},
    )
    event.listen(engine.sync_engine, "checkout", _discard_closed_connection)
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)
