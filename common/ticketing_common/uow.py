"""The unit of work: one handle on one transaction, and the one way to act after it commits."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Annotated, cast

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ticketing_common.db import OutboxEvent, driver_connection
from ticketing_common.events import Event
from ticketing_common.requestid import current_request_id

logger = logging.getLogger("ticketing.uow")


@dataclass(frozen=True)
class Database:
    """A service's database: the engine and its sessions, and a plain asyncpg pool for the measured fast paths."""

    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    # SQLAlchemy's checkout alone costs more than a single-row statement (bench/); repositories use this pool only
    # for statements that are atomic on their own, and say why where they do.
    pool: asyncpg.Pool

    @functools.cached_property
    def autocommit(self) -> UnitOfWork:
        """The database's unit of work with no transaction: it holds no state, so one serves every request."""
        return UnitOfWork(self.sessionmaker, self.pool, transactional=False)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[UnitOfWork]:
        """A unit of work that commits when the block ends, or rolls back if it raises."""
        uow = UnitOfWork(self.sessionmaker, self.pool)
        try:
            yield uow
            await uow.commit()
        except BaseException:
            await uow.rollback()
            raise
        finally:
            await uow.close()


class UnitOfWork:
    """One transaction, whichever way a repository talks to it: the session, or its asyncpg connection.

    Events staged with enqueue() are written to the outbox in the same transaction, just before it commits;
    callbacks registered with after_commit() run once it has committed. A rollback drops both.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        pool: asyncpg.Pool | None = None,
        *,
        transactional: bool = True,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._pool = pool
        self._transactional = transactional
        self._session: AsyncSession | None = None
        self._driver: tuple[object, asyncpg.Connection] | None = None
        self._staged: list[dict[str, object]] = []
        self._callbacks: list[Callable[[], None]] = []

    @property
    def session(self) -> AsyncSession:
        """The transaction's session, opened on first use; its transaction begins with its first statement."""
        if self._session is None:
            if not self._transactional:
                raise RuntimeError("an autocommit unit of work has no transaction: take UnitOfWorkDep instead")
            self._session = self._sessionmaker()
        return self._session

    async def connection(self) -> asyncpg.Connection:
        """The asyncpg connection under the session's transaction, for hot paths (statements join the transaction).

        Looked up once per transaction: walking SQLAlchemy's connection machinery on every statement was ~15% of a
        listener batch, and the connection cannot change while the transaction lives.
        """
        session = self.session
        transaction = session.sync_session.get_transaction()
        if transaction is not None and self._driver is not None and self._driver[0] is transaction:
            return self._driver[1]
        conn = await driver_connection(session)
        self._driver = (session.sync_session.get_transaction(), conn)
        return conn

    def autocommit(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A pooled connection outside this unit's transaction, for one statement that is atomic on its own.

        No BEGIN/COMMIT and no SQLAlchemy checkout around it: one round trip instead of four (bench/). asyncpg's own
        acquire context, handed back as it is: a generator-based context manager around it was ~4% of a GET.
        """
        if self._pool is None:
            raise RuntimeError("this unit of work has no asyncpg pool")
        return cast(AbstractAsyncContextManager[asyncpg.Connection], self._pool.acquire())

    def enqueue(self, event: Event) -> None:
        """Stage an event: written to the outbox with this transaction, published by the relay once it commits."""
        self.enqueue_message(event.subject, event.to_bytes(), message_id=event.event_id)

    def enqueue_message(
        self, subject: str, payload: bytes, *, message_id: object, request_id: str | None = None
    ) -> None:
        """Stage a message that is not a catalog event (a dead-letter notice) the same way as enqueue()."""
        self._require_transaction()
        self._staged.append(
            {
                "id": message_id,
                "subject": subject,
                "payload": payload,
                "request_id": request_id if request_id is not None else current_request_id(),
            }
        )

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run callback once this transaction has committed; never if it rolls back."""
        self._require_transaction()
        self._callbacks.append(callback)

    def _require_transaction(self) -> None:
        # Nothing would ever commit what an autocommit unit stages: refuse it rather than lose it.
        if not self._transactional:
            raise RuntimeError("an autocommit unit of work has no transaction: take UnitOfWorkDep instead")

    async def commit(self) -> None:
        """Write the staged events, commit, then run the after-commit callbacks."""
        if self._session is None and not self._staged and not self._callbacks:
            return  # nothing opened (a request served from the pool alone): nothing to commit
        staged, self._staged = self._staged, []
        if staged:
            # One Core insert for all of a transaction's events: an ORM flush per event cost more than the write.
            await self.session.execute(insert(OutboxEvent), staged)
        if self._session is not None:
            await self._session.commit()
        self._driver = None
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # the transaction is committed; a failed callback must not turn it into an error
                logger.exception("after-commit callback failed")

    async def rollback(self) -> None:
        """Roll back, dropping the staged events and the after-commit callbacks."""
        self._staged.clear()
        self._callbacks.clear()
        self._driver = None
        if self._session is None:
            return
        try:
            await self._session.rollback()
        except Exception as exc:
            # The server ended the session under us (a restart, a terminated backend): there is nothing left to roll
            # back. Raising here would replace the error that brought us here (a TicketReserved 400 became a 500),
            # and asyncpg may leave the connection mid-protocol while not yet closed; SQLAlchemy would pool it again.
            # So the connection is thrown away instead, and the original error goes on.
            logger.warning("rollback failed (%s: %s); discarding the connection", type(exc).__name__, exc)
            with contextlib.suppress(Exception):
                await self._session.invalidate()

    async def close(self) -> None:
        """Give the connection back to the pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def get_database(request: Request) -> Database:
    """The app's database, built by the lifespan."""
    return cast(Database, request.app.state.database)


async def get_unit_of_work(request: Request) -> AsyncIterator[UnitOfWork]:
    """A unit of work per request: the request edge owns the transaction, committing on success.

    Database.transaction() spelled out rather than wrapped: this runs on every request, the hottest ones included.
    """
    database: Database = request.app.state.database
    uow = UnitOfWork(database.sessionmaker, database.pool)
    try:
        yield uow
        await uow.commit()
    except BaseException:
        await uow.rollback()
        raise
    finally:
        await uow.close()


# scope="function": commit before the response is sent, so a failed commit can never follow a 2xx.
UnitOfWorkDep = Annotated[UnitOfWork, Depends(get_unit_of_work, scope="function")]


def autocommit_unit(request: Request) -> UnitOfWork:
    """The app's unit of work with no transaction, for routes whose every statement is atomic on its own.

    It never opens a session, so it needs no teardown; opening a session or staging an event on it raises, so a
    route that needs a transaction cannot take it by mistake. A plain call, not a FastAPI dependency, on purpose:
    these are the hottest routes, and solving one sub-dependency costs FastAPI about 70 Python calls, 8% of a
    single-row GET (bench/, and its call counts). Routes that write take UnitOfWorkDep.
    """
    return cast(Database, request.app.state.database).autocommit
