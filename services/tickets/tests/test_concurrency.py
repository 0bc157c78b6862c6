"""Concurrent writers to one ticket never both win and never lose an update."""

import asyncio

from sqlalchemy import select

from ticketing_tickets import repository
from ticketing_tickets.models import Ticket


async def stored(tickets, ticket_id) -> Ticket:
    async with tickets.sessionmaker() as session:
        return (await session.execute(select(Ticket).where(Ticket.id == ticket_id))).scalar_one()


async def test_concurrent_edits_each_get_their_own_version(tickets, seller, create_ticket, events) -> None:
    ticket = await create_ticket()
    responses = await asyncio.gather(
        *(
            tickets.client.put(
                f"/api/tickets/{ticket['id']}", json={"title": f"edit {i}", "price": i + 1}, headers=seller.headers
            )
            for i in range(10)
        )
    )
    # Edits of an unreserved ticket wait for each other's row lock and all win: none is refused or lost.
    assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses]
    won = [r.json() for r in responses]
    # One winner per version: the versions handed out are exactly 1..10, no gaps or repeats.
    assert sorted(w["version"] for w in won) == list(range(1, 11))
    row = await stored(tickets, ticket["id"])
    assert row.version == 10
    # No lost update: the row holds the edit that got the last version, and each edit was published once.
    last = max(won, key=lambda w: w["version"])
    assert (row.title, float(row.price)) == (last["title"], last["price"])
    published = await events.wait_for("ticket.updated", len(won))
    assert sorted(e["version"] for e in published) == list(range(1, len(won) + 1))
    assert {(e["version"], e["title"]) for e in published} == {(w["version"], w["title"]) for w in won}


async def test_an_order_reserving_during_edits_loses_neither_change(
    tickets, seller, create_ticket, publish, wait_handled, events, make_order_created
) -> None:
    ticket = await create_ticket()
    created = make_order_created(ticket["id"])

    async def edit(i: int):
        await asyncio.sleep(0.005 * i)
        return await tickets.client.put(
            f"/api/tickets/{ticket['id']}", json={"title": f"edit {i}", "price": 5}, headers=seller.headers
        )

    results = await asyncio.gather(publish(created), *(edit(i) for i in range(10)))
    await wait_handled(created.event_id)
    responses = results[1:]
    # An edit that met the order on the bus but not yet applied is held back (503) rather than applied.
    assert {r.status_code for r in responses} <= {200, 400, 503}
    refused = [r for r in responses if r.status_code == 400]
    assert all(r.json() == {"errors": [{"message": "Cannot edit a reserved ticket"}]} for r in refused)
    held = [r for r in responses if r.status_code == 503]
    assert all(r.headers["Retry-After"] == "1" for r in held)
    won = [r.json() for r in responses if r.status_code == 200]

    row = await stored(tickets, ticket["id"])
    # The reservation stuck, every accepted edit counted, and each change has its own version.
    assert row.order_id == created.id
    assert row.version == len(won) + 1
    published = await events.wait_for("ticket.updated", len(won) + 1)
    assert [e["version"] for e in published] == list(range(1, len(won) + 2))
    reservation = next(e for e in published if e["orderId"] is not None)
    # Edits that won all came before the reservation; none landed on the reserved ticket.
    assert all(w["version"] < reservation["version"] for w in won)
    assert reservation["version"] == row.version
    if won:
        assert row.title == max(won, key=lambda w: w["version"])["title"]


async def test_an_edit_that_saw_a_reservation_released_while_it_decided_gets_409_and_its_retry_wins(
    tickets, seller, create_ticket, publish, wait_handled, events, make_order_created, make_order_cancelled, monkeypatch
) -> None:
    ticket = await create_ticket()  # version 0
    created = make_order_created(ticket["id"])
    await publish(created)
    await wait_handled(created.event_id)  # reserved: version 1
    cancelled = make_order_cancelled(created)
    real_lookup = repository.find_owner_and_order

    async def released_meanwhile(uow, ticket_id):
        # The edit's UPDATE has just found the ticket reserved; the order is cancelled and the ticket released
        # (version 2) before the edit looks at why, as a concurrent order.cancelled would.
        await publish(cancelled)
        await wait_handled(cancelled.event_id)
        return await real_lookup(uow, ticket_id)

    monkeypatch.setattr(repository, "find_owner_and_order", released_meanwhile)
    url = f"/api/tickets/{ticket['id']}"
    refused = await tickets.client.put(url, json={"title": "stale edit", "price": 30}, headers=seller.headers)
    monkeypatch.undo()

    assert refused.status_code == 409, refused.text
    assert refused.json() == {"errors": [{"message": "The resource was changed concurrently; retry"}]}
    row = await stored(tickets, ticket["id"])
    assert (row.version, row.order_id, row.title) == (2, None, ticket["title"])  # the refused edit changed nothing
    retried = await tickets.client.put(url, json={"title": "stale edit", "price": 30}, headers=seller.headers)
    assert retried.status_code == 200, retried.text
    assert retried.json()["version"] == 3
    # The exact history, each version published once: reserved 1, released 2, the retried edit 3.
    published = await events.wait_for("ticket.updated", 3)
    assert [(e["version"], e["orderId"], e["title"]) for e in published] == [
        (1, str(created.id), ticket["title"]),
        (2, None, ticket["title"]),
        (3, None, "stale edit"),
    ]
