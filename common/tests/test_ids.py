"""Entity ids: UUIDv7s that say when they were minted, which the "not yet known" rule reads."""

from __future__ import annotations

import asyncio
import time
import uuid

from ticketing_common.ids import (
    CLOCK_SKEW_SECONDS,
    REPLICA_WAITERS,
    find_in_replica,
    minted_at,
    minted_within,
    new_id,
)
from ticketing_testing import id_minted


def test_a_new_id_is_a_uuid7_minted_now_and_ids_sort_by_minting() -> None:
    before = time.time()
    ids = [new_id() for _ in range(100)]
    after = time.time()
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids)
    # Ids minted within one millisecond stay ordered by borrowing the next millisecond: at most one each.
    assert all(before - 0.001 <= (minted_at(i) or 0) <= after + len(ids) / 1000 for i in ids)


def test_only_a_uuid7_minted_within_the_window_and_not_beyond_the_skew_ahead_is_fresh() -> None:
    now = time.time()
    assert minted_within(id_minted(1), 30, now)
    assert minted_within(id_minted(29), 30, now)
    assert not minted_within(id_minted(31), 30, now)
    assert minted_within(id_minted(-(CLOCK_SKEW_SECONDS - 1)), 30, now)
    assert not minted_within(id_minted(-(CLOCK_SKEW_SECONDS + 1)), 30, now)
    assert not minted_within(id_minted(1), 0, now)
    assert minted_at(uuid.uuid4()) is None
    assert not minted_within(uuid.uuid4(), 30, now)


class Finder:
    """A replica that receives the entity on the n-th look (never, for None), counting the looks."""

    def __init__(self, found_on: int | None) -> None:
        self.found_on = found_on
        self.looks = 0

    async def __call__(self) -> str | None:
        self.looks += 1
        return "row" if self.found_on is not None and self.looks >= self.found_on else None


async def test_a_fresh_id_is_looked_for_again_until_its_replica_has_it() -> None:
    find = Finder(found_on=4)
    assert await find_in_replica(new_id(), find) == "row"
    assert find.looks == 4


async def test_a_fresh_id_that_never_arrives_is_given_up_after_the_wait() -> None:
    find = Finder(found_on=None)
    assert await find_in_replica(new_id(), find) is None
    assert find.looks > 2


async def test_an_old_or_random_id_is_looked_for_once() -> None:
    for entity_id in (id_minted(seconds_ago=60), uuid.uuid4()):
        find = Finder(found_on=None)
        assert await find_in_replica(entity_id, find) is None
        assert find.looks == 1


async def test_no_more_than_a_few_requests_wait_at_once() -> None:
    finds = [Finder(found_on=None) for _ in range(REPLICA_WAITERS + 3)]
    await asyncio.gather(*(find_in_replica(new_id(), find) for find in finds))
    assert sorted(find.looks > 1 for find in finds) == [False] * 3 + [True] * REPLICA_WAITERS
