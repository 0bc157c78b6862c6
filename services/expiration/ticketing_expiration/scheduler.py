"""The expiration scheduler: sleeps until the next due job, is woken by new ones, and fires due jobs in batches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import cast

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ticketing_common.app import Runtime
from ticketing_common.db import listen_forever
from ticketing_expiration import service
from ticketing_expiration.settings import Settings

logger = logging.getLogger("ticketing.expiration.scheduler")

# asyncio timers may return a hair early; a little slack avoids an empty pass just before the job is due.
_SLACK_SECONDS = 0.002
# When the earliest job is due but another replica holds its row, wait this long instead of spinning.
_LOCKED_ELSEWHERE_SECONDS = 0.02

# The scheduler of each running app, found by its sessionmaker, so that app's listeners can wake it in-process.
_local: weakref.WeakKeyDictionary[async_sessionmaker[AsyncSession], ExpirationScheduler] = weakref.WeakKeyDictionary()


def wake_local(sessionmaker: async_sessionmaker[AsyncSession], due_epoch: float) -> None:
    """Wake the scheduler of the app that owns this sessionmaker, if a job due at due_epoch is sooner than its plan."""
    scheduler = _local.get(sessionmaker)
    if scheduler is not None:
        scheduler.wake(due_epoch)


class ExpirationScheduler:
    """Fires expiration.complete for every due job exactly once, however many replicas run.

    One task loops: claim and fire due jobs (batches, FOR UPDATE SKIP LOCKED), then sleep until the earliest pending
    job is due, or the safety-net poll, whichever is first. A wake-up event cuts the sleep short when a sooner job
    arrives: set in-process by this app's listener after its commit, and by NOTIFY on a LISTEN connection, which
    reaches every replica. Because jobs are rows and the first pass runs at start, jobs that fell due while the
    service was down fire right after it starts.
    """

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        poll_seconds: float = 30.0,
        batch_size: int = 500,
    ) -> None:
        self.engine = engine
        self.sessionmaker = sessionmaker
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.fired_total = 0
        self._wake = asyncio.Event()
        # Due time (epoch s) of the job the current sleep waits for; None while a pass is deciding, so any wake-up
        # that arrives during the pass is kept rather than compared against a stale plan.
        self._planned: float | None = None
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> ExpirationScheduler:
        """The worker factory ServiceSpec.workers calls with the app's runtime."""
        settings = cast(Settings, runtime.settings)
        return cls(
            engine=runtime.engine,
            sessionmaker=runtime.sessionmaker,
            poll_seconds=settings.expiration_poll_seconds,
            batch_size=settings.expiration_batch_size,
        )

    async def start(self) -> None:
        """Run the loop and its LISTEN connection in the background."""
        _local[self.sessionmaker] = self
        self._tasks = [
            asyncio.create_task(self._run(), name="expiration-scheduler"),
            asyncio.create_task(self._listen(), name="expiration-listen"),
        ]

    async def stop(self) -> None:
        """Finish the batch in flight, then stop."""
        self._stopping = True
        _local.pop(self.sessionmaker, None)
        self._wake.set()
        if not self._tasks:
            return
        run, listen = self._tasks
        listen.cancel()
        try:
            await asyncio.wait_for(run, timeout=10)
        except (TimeoutError, asyncio.CancelledError):
            run.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task

    def wake(self, due_epoch: float | None = None) -> None:
        """Re-plan now if a job due at due_epoch (or, with None, anything) may be sooner than the current plan."""
        planned = self._planned
        if due_epoch is None or planned is None or due_epoch < planned:
            self._wake.set()

    async def fire_due(self) -> int:
        """Fire due jobs, batch after batch, until none is left; return how many fired."""
        total = 0
        while not self._stopping:
            async with self.sessionmaker() as session, session.begin():
                fired = await service.fire_due_expirations(session=session, limit=self.batch_size)
            total += len(fired)
            if len(fired) < self.batch_size:
                break
        if total:
            self.fired_total += total
            logger.info("fired %d expirations", total)
        return total

    async def _plan(self) -> float:
        """Seconds to sleep: until the earliest pending job, at most the safety-net poll."""
        async with self.sessionmaker() as session:
            upcoming = await service.next_due(session=session)
        if upcoming is None:
            return self.poll_seconds
        self._planned = upcoming.at_epoch
        if upcoming.in_seconds <= 0:
            # Due but not claimable: another replica holds it and is firing it right now.
            return _LOCKED_ELSEWHERE_SECONDS
        return min(upcoming.in_seconds + _SLACK_SECONDS, self.poll_seconds)

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            self._planned = None
            self._wake.clear()
            try:
                await self.fire_due()
                delay = await self._plan()
                backoff = 0.1
            except Exception as exc:
                logger.warning("expiration pass failed: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    def _on_notify(self, payload: str) -> None:
        try:
            due_epoch: float | None = float(payload)
        except ValueError:
            due_epoch = None
        self.wake(due_epoch)

    async def _listen(self) -> None:
        # Every (re)connect wakes a pass, to catch up on jobs stored while we were not listening.
        await listen_forever(self.engine, service.EXPIRATION_CHANNEL, self._on_notify, on_connect=self.wake)
