"""Entity ids that carry the moment they were minted (UUIDv7), so a replica can tell "not yet" from "never"."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import uuid6

T = TypeVar("T")

# How far in the future a v7 id's moment may lie (the producer's clock ahead of ours) and still count as fresh.
CLOCK_SKEW_SECONDS = 5.0


def new_id() -> uuid.UUID:
    """A new entity id: a UUIDv7 (RFC 9562), its first 48 bits the Unix time in milliseconds, the rest random."""
    return uuid.UUID(int=uuid6.uuid7().int)


def minted_at(entity_id: uuid.UUID) -> float | None:
    """The Unix time (seconds) a UUIDv7 was minted at; None for any other version, which carries no usable time."""
    if entity_id.version != 7 or entity_id.variant != uuid.RFC_4122:
        return None
    return (entity_id.int >> 80) / 1000


def minted_within(entity_id: uuid.UUID, seconds: float, now: float) -> bool:
    """Whether the id is a UUIDv7 minted at most `seconds` before `now` (and not beyond the clock skew after it)."""
    at = minted_at(entity_id)
    return at is not None and now - seconds <= at <= now + CLOCK_SKEW_SECONDS


# A replica miss for an id minted this recently is most likely its event a few milliseconds away: the request looks
# again for up to REPLICA_WAIT_SECONDS before answering "not yet known" (503, Retry-After: 1), which would cost the
# caller a round trip and a second. At most REPLICA_WAITERS requests of a process wait at once, each holding its
# transaction's connection, so that made-up fresh ids cannot tie up the pool: the others answer at once.
REPLICA_WAIT_FRESH_SECONDS = 5.0
REPLICA_WAIT_SECONDS = 0.5
REPLICA_WAITERS = 4
_waiters = 0


async def find_in_replica(entity_id: uuid.UUID, find: Callable[[], Awaitable[T | None]]) -> T | None:
    """find(); for a UUIDv7 minted moments ago that it did not find, find() again a few times over at most
    REPLICA_WAIT_SECONDS (each statement of a READ COMMITTED transaction sees what committed since)."""
    global _waiters
    found = await find()
    if found is not None or _waiters >= REPLICA_WAITERS:
        return found
    if not minted_within(entity_id, REPLICA_WAIT_FRESH_SECONDS, time.time()):
        return None
    _waiters += 1
    try:
        deadline = time.monotonic() + REPLICA_WAIT_SECONDS
        pause = 0.005
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.1)
            found = await find()
            if found is not None:
                return found
        return None
    finally:
        _waiters -= 1
