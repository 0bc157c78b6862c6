"""The contract's version rule as a pure function."""

import pytest

from ticketing_common.listener import EventOutOfOrder, durable_name, version_gate


def test_version_zero_creates() -> None:
    assert version_gate(None, 0) is True


def test_the_next_version_applies() -> None:
    assert version_gate(3, 4) is True


@pytest.mark.parametrize(("held", "incoming"), [(3, 3), (3, 2), (0, 0)])
def test_old_or_equal_versions_are_ignored(held: int, incoming: int) -> None:
    assert version_gate(held, incoming) is False


@pytest.mark.parametrize(("held", "incoming"), [(None, 1), (3, 5), (0, 2)])
def test_gaps_are_deferred(held: int | None, incoming: int) -> None:
    with pytest.raises(EventOutOfOrder):
        version_gate(held, incoming)


def test_durable_names_follow_the_contract() -> None:
    assert durable_name("orders", "ticket.created") == "orders-ticket-created"
