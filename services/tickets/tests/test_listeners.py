"""Order events reserve and release tickets, through a real JetStream round trip, whatever their order."""

import random
import re
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from ticketing_common.listener import EventOutOfOrder
from ticketing_testing import eventually, parked
from ticketing_tickets.models import OrderVersion, Ticket
from ticketing_tickets.service import cancellation_applies


async def read_ticket(tickets, ticket_id) -> dict[str, Any]:
    response = await tickets.client.get(f"/api/tickets/{ticket_id}")
    assert response.status_code == 200
    return response.json()


def updates_of(events, ticket_id) -> list[dict[str, Any]]:
    return [e for e in events.of("ticket.updated") if e["id"] == str(ticket_id)]


async def test_order_created_reserves_the_ticket_and_publishes_it(
    tickets, create_ticket, publish, wait_handled, events, make_order_created
) -> None:
    ticket = await create_ticket(title="gig", price=15)
    created = make_order_created(ticket["id"], price=15)
    await publish(created)
    await wait_handled(created.event_id)
    assert await read_ticket(tickets, ticket["id"]) == {**ticket, "orderId": str(created.id), "version": 1}
    [published] = await events.wait_for("ticket.updated")
    assert published == {**ticket, "orderId": str(created.id), "version": 1}
    [captured] = [e for e in events.events if e.subject == "ticket.updated"]
    assert captured.headers["X-Request-ID"] == f"req-{created.event_id.hex[:12]}"
    uuid.UUID(captured.headers["Nats-Msg-Id"])


async def test_order_cancelled_releases_the_ticket(
    tickets, create_ticket, publish, wait_handled, events, make_order_created, make_order_cancelled
) -> None:
    ticket = await create_ticket()
    created = make_order_created(ticket["id"])
    cancelled = make_order_cancelled(created)
    await publish(created)
    await wait_handled(created.event_id)
    await publish(cancelled)
    await wait_handled(cancelled.event_id)
    assert await read_ticket(tickets, ticket["id"]) == {**ticket, "orderId": None, "version": 2}
    published = await events.wait_for("ticket.updated", 2)
    assert [(e["version"], e["orderId"]) for e in published] == [(1, str(created.id)), (2, None)]
    listed = (await tickets.client.get("/api/tickets")).json()
    assert [t["id"] for t in listed] == [ticket["id"]]


async def test_a_released_ticket_can_be_edited_again(
    tickets, seller, create_ticket, publish, wait_handled, make_order_created, make_order_cancelled
) -> None:
    ticket = await create_ticket()
    created = make_order_created(ticket["id"])
    await publish(created)
    await publish(make_order_cancelled(created))
    await eventually(lambda: _unreserved_at(tickets, ticket["id"], 2))
    response = await tickets.client.put(
        f"/api/tickets/{ticket['id']}", json={"title": "relisted", "price": 30}, headers=seller.headers
    )
    assert response.status_code == 200
    assert response.json()["version"] == 3


async def _unreserved_at(tickets, ticket_id, version) -> bool:
    body = await read_ticket(tickets, ticket_id)
    return body["orderId"] is None and body["version"] == version


async def test_a_cancelled_order_that_does_not_hold_the_ticket_changes_nothing(
    tickets, create_ticket, publish, wait_handled, events, make_order_created, make_order_cancelled
) -> None:
    ticket = await create_ticket()
    holder = make_order_created(ticket["id"], expires_in=900)
    await publish(holder)
    await wait_handled(holder.event_id)
    # An older order for the same ticket whose events arrive late: it was cancelled before `holder` existed.
    stale = make_order_created(ticket["id"], expires_in=-60)
    stale_cancelled = make_order_cancelled(stale)
    await publish(stale)
    await publish(stale_cancelled)
    await wait_handled(stale.event_id, stale_cancelled.event_id)
    assert await read_ticket(tickets, ticket["id"]) == {**ticket, "orderId": str(holder.id), "version": 1}
    assert len(updates_of(events, ticket["id"])) == 1


async def test_duplicate_order_created_changes_nothing(
    tickets, create_ticket, publish, wait_handled, events, make_order_created
) -> None:
    ticket = await create_ticket()
    created = make_order_created(ticket["id"])
    assert not (await publish(created)).duplicate
    # JetStream itself drops a re-publish under the same Nats-Msg-Id...
    assert (await publish(created)).duplicate
    # ...and a copy under a new id reaches the listener, where the version rule ignores it.
    copy_id = str(uuid.uuid4())
    await publish(created, message_id=copy_id)
    await wait_handled(created.event_id, copy_id)
    assert await read_ticket(tickets, ticket["id"]) == {**ticket, "orderId": str(created.id), "version": 1}
    await events.wait_for("ticket.updated")
    assert len(updates_of(events, ticket["id"])) == 1


async def test_duplicate_order_cancelled_changes_nothing(
    tickets, seller, create_ticket, publish, wait_handled, events, make_order_created, make_order_cancelled
) -> None:
    ticket = await create_ticket()
    created = make_order_created(ticket["id"])
    cancelled = make_order_cancelled(created)
    await publish(created)
    await publish(cancelled)
    await wait_handled(created.event_id, cancelled.event_id)
    # The seller edits in between, so a wrongly re-applied cancellation would show as a version bump.
    await tickets.client.put(
        f"/api/tickets/{ticket['id']}", json={"title": "edited", "price": 3}, headers=seller.headers
    )
    copies = [str(uuid.uuid4()), str(uuid.uuid4())]
    await publish(cancelled, message_id=copies[0])
    await publish(created, message_id=copies[1])
    await wait_handled(*copies)
    body = await read_ticket(tickets, ticket["id"])
    assert (body["orderId"], body["version"], body["title"]) == (None, 3, "edited")
    assert len(updates_of(events, ticket["id"])) == 3


async def test_order_cancelled_before_its_order_created_waits_for_it(
    tickets, nats_client, create_ticket, publish, wait_handled, events, dead_letters, make_order_created,
    make_order_cancelled,
) -> None:  # fmt: skip
    ticket = await create_ticket()
    created = make_order_created(ticket["id"])
    cancelled = make_order_cancelled(created)
    await publish(cancelled)

    await parked(nats_client.jetstream(), tickets.runtime.database, "ORDERS", "tickets-order-cancelled")
    assert await read_ticket(tickets, ticket["id"]) == ticket  # nothing applied while it waits

    await publish(created)
    await wait_handled(created.event_id, cancelled.event_id)
    assert await read_ticket(tickets, ticket["id"]) == {**ticket, "orderId": None, "version": 2}
    published = await events.wait_for("ticket.updated", 2)
    assert [(e["version"], e["orderId"]) for e in published] == [(1, str(created.id)), (2, None)]
    assert await dead_letters() == 0


async def test_a_cancellation_with_a_version_gap_still_releases(
    tickets, create_ticket, publish, wait_handled, make_order_created, make_order_cancelled
) -> None:
    ticket = await create_ticket()
    created = make_order_created(ticket["id"])
    # Orders may bump versions on changes tickets never hears of; cancelling is final, so it applies.
    cancelled = make_order_cancelled(created, version=3)
    await publish(created)
    await publish(cancelled)
    await wait_handled(created.event_id, cancelled.event_id)
    assert await read_ticket(tickets, ticket["id"]) == {**ticket, "orderId": None, "version": 2}


def test_the_cancellation_rule_waits_ignores_and_applies() -> None:
    with pytest.raises(EventOutOfOrder):
        cancellation_applies(None, 1)
    assert cancellation_applies(0, 1) is True
    assert cancellation_applies(0, 2) is True
    assert cancellation_applies(1, 1) is False
    assert cancellation_applies(2, 1) is False


async def test_a_newer_order_takes_over_from_an_older_one_whose_cancellation_is_late(
    tickets, create_ticket, publish, wait_handled, make_order_created, make_order_cancelled
) -> None:
    ticket = await create_ticket()
    older = make_order_created(ticket["id"], expires_in=60)
    newer = make_order_created(ticket["id"], expires_in=900)
    await publish(older)
    await wait_handled(older.event_id)
    # Orders only created `newer` after `older` was cancelled, so `older` cannot be the live one.
    await publish(newer)
    await wait_handled(newer.event_id)
    assert (await read_ticket(tickets, ticket["id"]))["orderId"] == str(newer.id)
    late = make_order_cancelled(older)
    await publish(late)
    await wait_handled(late.event_id)
    body = await read_ticket(tickets, ticket["id"])
    assert (body["orderId"], body["version"]) == (str(newer.id), 2)


async def test_an_order_for_an_unknown_ticket_is_acknowledged_and_ignored(
    tickets, publish, wait_handled, events, dead_letters, make_order_created, make_order_cancelled
) -> None:
    created = make_order_created(uuid.uuid4())
    cancelled = make_order_cancelled(created)
    await publish(created)
    await publish(cancelled)
    await wait_handled(created.event_id, cancelled.event_id)
    async with tickets.sessionmaker() as session:
        recorded = await session.get(OrderVersion, created.id)
        assert (recorded.version, recorded.cancelled) == (1, True)
        assert (await session.execute(select(Ticket))).first() is None
    assert events.of("ticket.updated") == []
    assert await dead_letters() == 0


# --- a shuffled, duplicated stream ends where the ordered one does -----------------------------------------------

# Per ticket, its orders in creation order; every order but possibly the last one was cancelled.
SCENARIOS = {
    "never ordered": (0, False),
    "held": (1, True),
    "released": (1, False),
    "resold": (2, True),
    "resold twice, then released": (3, False),
    "resold three times": (4, True),
}


def scenario_events(ticket_id, orders: int, last_live: bool, make_order_created, make_order_cancelled) -> list:
    """The events of one ticket's history, in the order orders publishes them."""
    history = []
    for i in range(orders):
        created = make_order_created(ticket_id, expires_in=600 + 60 * i)
        history.append(created)
        if i < orders - 1 or not last_live:
            history.append(make_order_cancelled(created))
    return history


def holder_role(body, histories) -> str | None:
    """Which order of the ticket's history holds it, by position (comparable across runs)."""
    if body["orderId"] is None:
        return None
    created = [e for e in histories if e.subject == "order.created"]
    return f"order {[str(e.id) for e in created].index(body['orderId'])}"


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_shuffled_duplicated_sequence_ends_like_the_ordered_one(
    tickets, create_ticket, publish, wait_handled, events, dead_letters, seed, make_order_created,
    make_order_cancelled,
) -> None:  # fmt: skip
    ordered, shuffled = {}, {}
    for name, (orders, last_live) in SCENARIOS.items():
        for runs in (ordered, shuffled):
            ticket = await create_ticket(title=name)
            runs[ticket["id"]] = (name, scenario_events(ticket["id"], orders, last_live, make_order_created,
                                                         make_order_cancelled))  # fmt: skip

    # The baseline: each event handled before the next is published.
    for _, history in ordered.values():
        for event in history:
            await publish(event)
            await wait_handled(event.event_id)

    rng = random.Random(seed)
    stream = [(event, str(event.event_id)) for _, history in shuffled.values() for event in history]
    stream += [(event, str(uuid.uuid4())) for event, _ in rng.sample(stream, len(stream) // 2)]  # copies
    stream += rng.sample(stream, len(stream) // 3)  # exact re-publishes, which JetStream drops
    rng.shuffle(stream)
    for event, message_id in stream:
        await publish(event, message_id=message_id)
    await wait_handled(*{message_id for _, message_id in stream}, timeout=60)

    outcome = {}
    for runs in (ordered, shuffled):
        for ticket_id, (name, history) in runs.items():
            body = await read_ticket(tickets, ticket_id)
            outcome.setdefault(name, []).append(holder_role(body, history))
            # What the service last published is what it holds.
            published = updates_of(events, ticket_id)
            if published:
                await eventually(lambda tid=ticket_id, v=body["version"]: _published_version(events, tid, v))
                assert updates_of(events, ticket_id)[-1]["orderId"] == body["orderId"]
            else:
                assert body["version"] == 0
    expected = {
        name: [f"order {orders - 1}"] * 2 if last_live else [None, None]
        for name, (orders, last_live) in SCENARIOS.items()
    }
    assert outcome == expected
    assert await dead_letters() == 0


async def _published_version(events, ticket_id, version) -> bool:
    published = updates_of(events, ticket_id)
    return bool(published) and published[-1]["version"] == version


async def test_an_edit_that_raced_an_order_gives_way_to_the_orders_price(
    tickets, seller, create_ticket, publish, wait_handled, events, make_order_created
) -> None:
    # Issue 15 #3: the order was placed at 20 on orders' replica; the seller's edit to 999 reached tickets first.
    ticket = await create_ticket(title="gig", price=20)
    response = await tickets.client.put(
        f"/api/tickets/{ticket['id']}", json={"title": "gig", "price": 999}, headers=seller.headers
    )
    assert response.status_code == 200
    created = make_order_created(ticket["id"])
    assert created.ticket.price == 20
    await publish(created)
    await wait_handled(created.event_id)
    shown = await read_ticket(tickets, ticket["id"])
    assert (shown["price"], shown["orderId"], shown["version"]) == (20, str(created.id), 2)
    published = await events.wait_for("ticket.updated", 2)
    assert [(e["version"], e["price"], e["orderId"]) for e in published] == [
        (1, 999, None),
        (2, 20, str(created.id)),
    ]
    refused = await tickets.client.put(
        f"/api/tickets/{ticket['id']}", json={"title": "gig", "price": 999}, headers=seller.headers
    )
    assert refused.status_code == 400


async def parked_gauge(tickets) -> float:
    text = (await tickets.client.get("/metrics")).text
    found = re.search(r'ticketing_parked_events\{service="tickets",subject="order.cancelled"\} (\S+)', text)
    assert found, "no ticketing_parked_events series for order.cancelled"
    return float(found.group(1))


@pytest.mark.parametrize(
    "tickets", [pytest.param({"dead_letters_refresh_seconds": 0.1}, id="refresh-0.1s")], indirect=True
)
async def test_the_parked_events_gauge_counts_a_cancel_waiting_for_its_create(
    tickets, nats_client, create_ticket, publish, wait_handled, make_order_created, make_order_cancelled
) -> None:
    ticket = await create_ticket()
    created = make_order_created(ticket["id"])
    cancelled = make_order_cancelled(created)
    await publish(cancelled)
    await parked(nats_client.jetstream(), tickets.runtime.database, "ORDERS", "tickets-order-cancelled")

    async def shows(value: float) -> bool:
        shown = await parked_gauge(tickets)
        assert shown == value, shown
        return True

    await eventually(lambda: shows(1))
    await publish(created)
    await wait_handled(created.event_id, cancelled.event_id)
    await eventually(lambda: shows(0))
