"""Entity ids: UUIDv7s that say when they were minted, which the "not yet known" rule reads."""

from __future__ import annotations

import time
import uuid

from ticketing_common.ids import CLOCK_SKEW_SECONDS, minted_at, minted_within, new_id
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
