"""Entity ids that carry the moment they were minted (UUIDv7), so a replica can tell "not yet" from "never"."""

from __future__ import annotations

import uuid

import uuid6

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
