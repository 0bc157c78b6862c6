"""The chaos run's "once" checks can fail: each is shown a run that did one thing twice, or not at all, and must say so.

The chaos run passes when everything held; these prove that a double publish, a double handling, a second charge or a
charge nobody recorded would not pass it. They feed the very functions the run calls (tests/test_chaos.py) with
made-up rows and streams, and the fake provider's real ledger file.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_chaos import Message, PublicationWatch, Recorded, handled_once_by_effect

from ticketing_payments.providers import FakeLedger, charges_per_key

TICKET_A, TICKET_B = str(uuid.uuid4()), str(uuid.uuid4())
PAID, EXPIRED = str(uuid.uuid4()), str(uuid.uuid4())  # two orders: one paid (complete), one expired (cancelled)
Streams = dict[str, list[Message]]


def ticket_events(ticket_id: str, holders: list[str | None]) -> list[Message]:
    """A ticket's events: created (version 0), then one ticket.updated per later holder (an order id, or None)."""
    events = [Message(0, "ticket.created", {"id": ticket_id, "version": 0}, str(uuid.uuid4()))]
    for version, holder in enumerate(holders[1:], start=1):
        data = {"id": ticket_id, "version": version, "orderId": holder}
        events.append(Message(0, "ticket.updated", data, str(uuid.uuid4())))
    return events


def expired(order_id: str) -> Message:
    return Message(0, "expiration.complete", {"orderId": order_id}, str(uuid.uuid4()))


def a_clean_run() -> tuple[Recorded, Streams]:
    """Ticket A reserved by the paid order; ticket B reserved by the other order, which expired, and released."""
    streams: Streams = {
        "TICKETS": ticket_events(TICKET_A, [None, PAID]) + ticket_events(TICKET_B, [None, EXPIRED, None]),
        "ORDERS": [],
        "EXPIRATION": [expired(EXPIRED)],
        "PAYMENTS": [],
        "DEADLETTERS": [],
    }
    recorded = Recorded(
        orders={
            PAID: {"status": "complete", "version": 1, "stripe_id": "pi_fake_1"},
            EXPIRED: {"status": "cancelled", "version": 1, "stripe_id": None},
        },
        tickets={TICKET_A: 1, TICKET_B: 2},
        replica={TICKET_A: 1, TICKET_B: 2},
        paid={PAID: ["pi_fake_1"]},
        per_key=Counter({PAID: 1}),
        charge_of={PAID: "pi_fake_1"},
    )
    return recorded, streams


def test_a_run_that_did_everything_once_passes_and_is_counted() -> None:
    problems, effects = handled_once_by_effect(*a_clean_run())

    assert problems == []
    assert (effects.tickets, effects.orders, effects.reserved, effects.released) == (2, 2, 2, 1)
    assert (effects.payments, effects.charges, effects.max_per_key, effects.expirations) == (1, 1, 1, 1)


def reserved_twice(recorded: Recorded, streams: Streams) -> None:
    # tickets handled the expired order's order.created and order.cancelled twice: two more versions.
    streams["TICKETS"] = [m for m in streams["TICKETS"] if m.data["id"] != TICKET_B]
    streams["TICKETS"] += ticket_events(TICKET_B, [None, EXPIRED, None, EXPIRED, None])
    recorded.tickets[TICKET_B] = recorded.replica[TICKET_B] = 4


def version_published_twice(recorded: Recorded, streams: Streams) -> None:
    streams["TICKETS"].append(streams["TICKETS"][1])


def replica_behind(recorded: Recorded, streams: Streams) -> None:
    recorded.replica[TICKET_B] = 1


def completed_twice(recorded: Recorded, streams: Streams) -> None:
    recorded.orders[PAID]["version"] = 2


def two_payment_rows(recorded: Recorded, streams: Streams) -> None:
    recorded.paid[PAID] = ["pi_fake_1", "pi_fake_1"]


def charged_twice(recorded: Recorded, streams: Streams) -> None:
    recorded.per_key[PAID] = 2


def charged_and_never_recorded(recorded: Recorded, streams: Streams) -> None:
    # The window the payments docstring describes, gone wrong: charged, the commit lost, and no retry recorded it.
    recorded.per_key[EXPIRED] = 1
    recorded.charge_of[EXPIRED] = "pi_fake_2"


def complete_without_a_charge(recorded: Recorded, streams: Streams) -> None:
    recorded.per_key.clear()
    recorded.charge_of.clear()


def expired_twice(recorded: Recorded, streams: Streams) -> None:
    streams["EXPIRATION"].append(expired(EXPIRED))


CASES: list[tuple[Callable[[Recorded, Streams], None], str]] = [
    (reserved_twice, "reserved 2 times, released 2 times"),
    (version_published_twice, "published versions [0, 1, 1]"),
    (replica_behind, "orders' replica 1"),
    (completed_twice, "at version 2: not exactly one transition"),
    (two_payment_rows, "2 payment rows"),
    (charged_twice, "charged 2 times by the provider"),
    (charged_and_never_recorded, "the provider charged pi_fake_2, payment rows name None"),
    (complete_without_a_charge, "(complete): 0 provider charges"),
    (expired_twice, "expiration.complete published 2 times"),
]


@pytest.mark.parametrize(("twice", "said"), CASES, ids=[twice.__name__ for twice, _ in CASES])
def test_a_run_that_did_one_thing_twice_or_not_at_all_fails(
    twice: Callable[[Recorded, Streams], None], said: str
) -> None:
    recorded, streams = a_clean_run()
    twice(recorded, streams)

    problems, _ = handled_once_by_effect(recorded, streams)

    assert any(said in problem for problem in problems), problems


def test_a_ledger_file_holding_two_charges_under_one_key_fails_the_check(tmp_path: Path) -> None:
    """charges_per_key reads what the file holds: a provider that ignored the idempotency key would show."""
    path = tmp_path / "fake-provider-ledger.sqlite3"
    FakeLedger(path).close()  # the schema, as payments creates it
    with sqlite3.connect(path) as conn:
        for charge_id in ("pi_fake_1", "pi_fake_again"):
            conn.execute(
                "INSERT INTO charges (charge_id, idempotency_key, amount, currency, token, metadata)"
                " VALUES (?, ?, '10.00', 'usd', 'tok_visa', '{}')",
                (charge_id, PAID),
            )
    conn.close()
    recorded, streams = a_clean_run()
    recorded.per_key = charges_per_key(path)

    problems, effects = handled_once_by_effect(recorded, streams)

    assert recorded.per_key == {PAID: 2}
    assert effects.max_per_key == 2
    assert f"order {PAID}: charged 2 times by the provider" in problems


def watch_that_saw(*event_ids: str, times: dict[str, list[float]] | None = None) -> PublicationWatch:
    watch = PublicationWatch()
    for event_id in event_ids:
        watch.ids[event_id] = (times or {}).get(event_id, [1.0])
    return watch


def stored(*events: tuple[str, float]) -> dict[str, list[Message]]:
    return {"TICKETS": [Message(0, "ticket.created", {}, event_id, at) for event_id, at in events]}


def test_an_event_in_a_stream_never_seen_published_fails_unless_the_watch_was_reconnecting() -> None:
    watch = watch_that_saw("seen")
    streams = stored(("seen", 100.0), ("unseen", 200.0))

    problems, excused = watch.unseen(streams)
    assert problems == ["event unseen (ticket.created) is in TICKETS but was never seen published"]
    assert excused == 0

    watch.offline.append((199.5, 199.8))  # stored within a second of the watch's reconnection: excused
    assert watch.unseen(streams) == ([], 1)


def test_an_event_published_twice_fails_unless_a_fault_struck_between_the_two_publishes() -> None:
    twice: dict[str, Any] = {"twice": [10.0, 12.0]}
    watch = watch_that_saw("once", "twice", times=twice)
    assert watch.problems({"once", "twice"}, faults=[]) == [
        "event twice published 2 times, no fault between (faults [])"
    ]

    watch = watch_that_saw("once", "twice", times=twice)
    assert watch.problems({"once", "twice"}, faults=[("SIGKILL tickets", 11.0)]) == []
    assert watch.republished == Counter({"SIGKILL tickets": 1})
    assert watch_that_saw("stray").problems(set(), faults=[]) == [
        "a publish without an event id from an outbox: 'stray'"
    ]
