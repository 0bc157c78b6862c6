"""The expiration scheduler: sleeps until the next due job, is woken by new ones, and fires due jobs in batches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import cast

from ticketing_common.app import Runtime
from ticketing_common.db import listen_forever
from ticketing_common.uow import Database
from ticketing_expiration import repository, service
from ticketing_expiration.settings import Settings

logger = logging.getLogger("ticketing.expiration.scheduler")

# asyncio timers may return a hair early; a little slack avoids an empty pass just before the job is due.
_SLACK_SECONDS = 0.002
# When the earliest job is due but another replica holds its row, wait this long instead of spinning.
_LOCKED_ELSEWHERE_SECONDS = 0.02


class ExpirationScheduler:
    """Fires expiration.complete for every due job exactly once, however many replicas run.

    One task loops: claim and fire due jobs (batches, FOR UPDATE SKIP LOCKED), then sleep until the earliest pending
    job is due, or the safety-net poll, whichever is first. A wake-up event cuts the sleep short when a sooner job
    arrives: set in-process by this app's listener after its commit (WakeUps), and by NOTIFY on a LISTEN connection, which
    reaches every replica. Because jobs are rows and the first pass runs at start, jobs that fell due while the
    service was down fire right after it starts.
    """

    def __init__(self, *, database: Database, poll_seconds: float = 30.0, batch_size: int = 500) -> None:
        self.database = database
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
            database=runtime.database,
            poll_seconds=settings.expiration_poll_seconds,
            batch_size=settings.expiration_batch_size,
        )

    async def start(self) -> None:
        """Run the loop and its LISTEN connection in the background."""
        self._tasks = [
            asyncio.create_task(self._run(), name="expiration-scheduler"),
            asyncio.create_task(self._listen(), name="expiration-listen"),
        ]

    async def stop(self) -> None:
        """Finish the batch in flight, then stop."""
        self._stopping = True
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
            async with self.database.transaction() as uow:
                fired = await service.fire_due_expirations(uow=uow, limit=self.batch_size)
            total += len(fired)
            if len(fired) < self.batch_size:
                break
        if total:
            self.fired_total += total
            logger.info("fired %d expirations", total)
        return total

    async def _plan(self) -> float:
        """Seconds to sleep: until the earliest pending job, at most the safety-net poll."""
        async with self.database.transaction() as uow:
            upcoming = await service.next_due(uow=uow)
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
        await listen_forever(self.database.engine, repository.EXPIRATION_CHANNEL, self._on_notify, on_connect=self.wake)


class WakeUps:
    """Wake-ups from this app's listeners to this app's scheduler, handed to both as their wiring.

    The app builds one and gives it to the listener factories and the worker factory, as it gives the provider to
    payments' worker: no module-level registry, and two apps in one process never wake each other.
    """

    def __init__(self) -> None:
        self._scheduler: ExpirationScheduler | None = None

    def scheduler(self, runtime: Runtime) -> ExpirationScheduler:
        """The worker factory: build this app's scheduler, which wake-ups reach from now on."""
        self._scheduler = ExpirationScheduler.from_runtime(runtime)
        return self._scheduler

    def __call__(self, due_epoch: float) -> None:
        """A job due at due_epoch was committed: re-plan if it is sooner than the scheduler's plan."""
        if self._scheduler is not None:
            self._scheduler.wake(due_epoch)
