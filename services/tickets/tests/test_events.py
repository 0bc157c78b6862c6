"""What the routes publish: ticket.created and ticket.updated, exactly as the contract's table, via the outbox."""

import uuid

from sqlalchemy import func, select

from ticketing_common.db import OutboxEvent
from ticketing_testing import eventually, make_user


async def test_create_publishes_ticket_created(tickets, seller, events) -> None:
    response = await tickets.client.post(
        "/api/tickets", json={"title": "concert", "price": 10.5}, headers={**seller.headers, "X-Request-ID": "req-c1"}
    )
    ticket = response.json()
    [published] = await events.wait_for("ticket.created")
    assert published == {"id": ticket["id"], "version": 0, "title": "concert", "price": 10.5, "userId": str(seller.id)}
    [captured] = [e for e in events.events if e.subject == "ticket.created"]
    uuid.UUID(captured.headers["Nats-Msg-Id"])
    assert captured.headers["X-Request-ID"] == "req-c1"


async def test_update_publishes_ticket_updated_with_the_new_version(tickets, seller, create_ticket, events) -> None:
    ticket = await create_ticket(title="before", price=10)
    response = await tickets.client.put(
        f"/api/tickets/{ticket['id']}",
        json={"title": "after", "price": 99.99},
        headers={**seller.headers, "X-Request-ID": "req-u1"},
    )
    assert response.status_code == 200
    [published] = await events.wait_for("ticket.updated")
    assert published == {
        "id": ticket["id"],
        "version": 1,
        "title": "after",
        "price": 99.99,
        "userId": str(seller.id),
        "orderId": None,
    }
    [captured] = [e for e in events.events if e.subject == "ticket.updated"]
    assert captured.headers["X-Request-ID"] == "req-u1"
    assert (
        captured.headers["Nats-Msg-Id"]
        != next(e for e in events.events if e.subject == "ticket.created").headers["Nats-Msg-Id"]
    )


async def test_each_edit_publishes_its_own_version_in_order(tickets, seller, create_ticket, events) -> None:
    ticket = await create_ticket()
    for i in range(1, 4):
        await tickets.client.put(
            f"/api/tickets/{ticket['id']}", json={"title": f"v{i}", "price": i}, headers=seller.headers
        )
    published = await events.wait_for("ticket.updated", 3)
    assert [(e["version"], e["title"], e["price"]) for e in published] == [(1, "v1", 1), (2, "v2", 2), (3, "v3", 3)]


async def test_refused_requests_publish_nothing(tickets, seller, create_ticket, events) -> None:
    ticket = await create_ticket()
    await tickets.client.post("/api/tickets", json={"title": "", "price": 10}, headers=seller.headers)
    await tickets.client.post("/api/tickets", json={"title": "anonymous", "price": 10})
    await tickets.client.put(
        f"/api/tickets/{ticket['id']}", json={"title": "x", "price": 1}, headers=make_user().headers
    )
    await tickets.client.put(f"/api/tickets/{ticket['id']}", json={"title": "x", "price": 0}, headers=seller.headers)
    # A later good edit proves the relay ran past the refusals' moment.
    await tickets.client.put(f"/api/tickets/{ticket['id']}", json={"title": "ok", "price": 1}, headers=seller.headers)
    await events.wait_for("ticket.updated")
    # The relay publishes in commit order, so a refusal's event would have come before the good edit's.
    assert len(events.of("ticket.created")) == 1
    assert [e["title"] for e in events.of("ticket.updated")] == ["ok"]
    async with tickets.sessionmaker() as session:
        assert (await session.execute(select(func.count()).select_from(OutboxEvent))).scalar_one() == 2


async def test_events_are_committed_to_the_outbox_and_marked_sent(tickets, create_ticket, events) -> None:
    ticket = await create_ticket()
    await events.wait_for("ticket.created")

    async def sent() -> bool:
        async with tickets.sessionmaker() as session:
            row = (
                await session.execute(select(OutboxEvent).where(OutboxEvent.subject == "ticket.created"))
            ).scalar_one()
        return row.sent_at is not None and ticket["id"] in row.payload.decode()

    await eventually(sent)
