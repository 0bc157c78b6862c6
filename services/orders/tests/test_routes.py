"""The /api/orders routes, case by case as the contract lists them."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import pytest

from ticketing_common.events import PaymentCreated, TicketUpdated
from ticketing_testing import eventually, make_user
from ticketing_testing.plugin import RunningService

# Named without their random ids, so that every pytest-xdist worker collects the same test names.
ANONYMOUS_CALLS = [
    pytest.param("POST", "/api/orders", {"ticketId": str(uuid.uuid4())}, id="POST-/api/orders"),
    pytest.param("GET", "/api/orders", None, id="GET-/api/orders"),
    pytest.param("GET", f"/api/orders/{uuid.uuid4()}", None, id="GET-/api/orders/<id>"),
    pytest.param("DELETE", f"/api/orders/{uuid.uuid4()}", None, id="DELETE-/api/orders/<id>"),
]


def parse_time(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def create(orders: RunningService, ticket_id: str, user=None):
    user = user or make_user()
    return await orders.client.post("/api/orders", json={"ticketId": ticket_id}, headers=user.headers)


async def test_creating_an_order_reserves_the_ticket_and_publishes_order_created(
    orders: RunningService, seed_ticket, events
) -> None:
    ticket = await seed_ticket(title="Opera night", price="45.10")
    user = make_user()
    before = datetime.now(UTC)
    response = await orders.client.post(
        "/api/orders", json={"ticketId": str(ticket.id)}, headers={**user.headers, "X-Request-ID": "req-order-1"}
    )
    after = datetime.now(UTC)
    assert response.status_code == 201
    body = response.json()
    assert body == {
        "id": body["id"],
        "userId": str(user.id),
        "status": "created",
        "expiresAt": body["expiresAt"],
        "version": 0,
        "ticket": {"id": str(ticket.id), "title": "Opera night", "price": 45.1, "version": 0},
    }
    uuid.UUID(body["id"])
    expires = parse_time(body["expiresAt"])
    window = timedelta(seconds=1800)
    assert before + window - timedelta(milliseconds=1) <= expires <= after + window

    [published] = await events.wait_for("order.created")
    assert published == {
        "id": body["id"],
        "version": 0,
        "status": "created",
        "userId": str(user.id),
        "expiresAt": body["expiresAt"],
        "ticket": {"id": str(ticket.id), "price": 45.1},
    }
    [captured] = [e for e in events.events if e.subject == "order.created"]
    uuid.UUID(captured.headers["Nats-Msg-Id"])
    assert captured.headers["X-Request-ID"] == "req-order-1"


@pytest.mark.parametrize("orders", [{"order_expiration_seconds": 60}], indirect=True)
async def test_expires_at_is_now_plus_the_configured_seconds(orders: RunningService, seed_ticket) -> None:
    ticket = await seed_ticket()
    before = datetime.now(UTC)
    response = await create(orders, str(ticket.id))
    after = datetime.now(UTC)
    expires = parse_time(response.json()["expiresAt"])
    assert before + timedelta(seconds=60) - timedelta(milliseconds=1) <= expires <= after + timedelta(seconds=60)


def test_order_expiration_seconds_must_be_positive() -> None:
    from pydantic import ValidationError

    from ticketing_orders.settings import Settings

    with pytest.raises(ValidationError, match="order_expiration_seconds"):
        Settings(
            environment="test",
            database_url="postgresql://x/y",
            nats_url="nats://x:4222",
            nats_client_id="t",
            jwt_key="k",
            order_expiration_seconds=0,
        )


@pytest.mark.parametrize(("method", "path", "body"), ANONYMOUS_CALLS)
async def test_anonymous_callers_are_not_authorized(orders: RunningService, method, path, body) -> None:
    response = await orders.client.request(method, path, json=body)
    assert response.status_code == 401
    assert response.json() == {"errors": [{"message": "Not authorized"}]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "TicketId must be provided"),
        ({"ticketId": None}, "TicketId must be provided"),
        ({"ticketId": "  "}, "TicketId must be provided"),
        ({"ticketId": "not-a-uuid"}, "TicketId must be a valid id"),
        ({"ticketId": 42}, "TicketId must be a valid id"),
    ],
)
async def test_rejects_a_missing_or_malformed_ticket_id(orders: RunningService, body, message) -> None:
    response = await orders.client.post("/api/orders", json=body, headers=make_user().headers)
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": message, "field": "ticketId"}]}


async def test_rejects_malformed_json(orders: RunningService) -> None:
    response = await orders.client.post(
        "/api/orders", content=b"{", headers={**make_user().headers, "content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Request body must be valid JSON"}]}


async def test_a_ticket_unknown_to_orders_is_not_found(orders: RunningService) -> None:
    response = await create(orders, str(uuid.uuid4()))
    assert response.status_code == 404
    assert response.json() == {"errors": [{"message": "Not Found"}]}


async def test_rejects_a_reserved_ticket(orders: RunningService, seed_ticket) -> None:
    ticket = await seed_ticket()
    assert (await create(orders, str(ticket.id))).status_code == 201
    response = await create(orders, str(ticket.id))
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Ticket is already reserved"}]}


async def test_a_cancelled_order_frees_its_ticket_for_another_order(orders: RunningService, seed_ticket) -> None:
    ticket = await seed_ticket()
    owner = make_user()
    first = (await create(orders, str(ticket.id), owner)).json()
    assert (await orders.client.delete(f"/api/orders/{first['id']}", headers=owner.headers)).status_code == 204
    assert (await create(orders, str(ticket.id))).status_code == 201


async def test_a_completed_order_keeps_its_ticket_reserved(orders: RunningService, place_order, publish, order_row):
    order = await place_order()
    await publish(PaymentCreated(id=uuid.uuid4(), order_id=uuid.UUID(order["id"]), stripe_id="ch_1"))

    async def completed() -> bool:
        return (await order_row(order["id"])).status == "complete"

    await eventually(completed)
    response = await create(orders, order["ticket"]["id"])
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Ticket is already reserved"}]}


async def test_of_100_concurrent_orders_for_one_ticket_exactly_one_wins(
    orders: RunningService, seed_ticket, outbox_subjects
) -> None:
    ticket = await seed_ticket()
    responses = await asyncio.gather(*(create(orders, str(ticket.id)) for _ in range(100)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [400] * 99
    refusals = {r.text for r in responses if r.status_code == 400}
    assert refusals == {'{"errors":[{"message":"Ticket is already reserved"}]}'}
    assert await outbox_subjects() == ["order.created"]


async def test_reads_one_of_the_callers_orders(orders: RunningService, place_order) -> None:
    user = make_user()
    order = await place_order(user=user)
    response = await orders.client.get(f"/api/orders/{order['id']}", headers=user.headers)
    assert response.status_code == 200
    assert response.json() == order


@pytest.mark.parametrize("order_id", [str(uuid.uuid4()), "not-a-uuid", "123"], ids=["unknown", "not-a-uuid", "123"])
async def test_an_unknown_or_malformed_order_id_is_not_found(orders: RunningService, order_id) -> None:
    user = make_user()
    read = await orders.client.get(f"/api/orders/{order_id}", headers=user.headers)
    cancel = await orders.client.delete(f"/api/orders/{order_id}", headers=user.headers)
    assert read.status_code == cancel.status_code == 404
    assert read.json() == cancel.json() == {"errors": [{"message": "Not Found"}]}


async def test_someone_elses_order_is_not_authorized(orders: RunningService, place_order, order_row) -> None:
    order = await place_order()
    stranger = make_user()
    read = await orders.client.get(f"/api/orders/{order['id']}", headers=stranger.headers)
    cancel = await orders.client.delete(f"/api/orders/{order['id']}", headers=stranger.headers)
    assert read.status_code == cancel.status_code == 401
    assert read.json() == cancel.json() == {"errors": [{"message": "Not authorized"}]}
    assert (await order_row(order["id"])).status == "created"


async def test_lists_only_the_callers_orders_newest_first_with_their_tickets(
    orders: RunningService, place_order
) -> None:
    user = make_user()
    mine = [await place_order(user=user) for _ in range(3)]
    await place_order()  # someone else's
    response = await orders.client.get("/api/orders", headers=user.headers)
    assert response.status_code == 200
    assert response.json() == list(reversed(mine))
    assert "X-Next-Cursor" not in response.headers
    assert "Link" not in response.headers


async def test_lists_page_by_page_with_an_opaque_cursor(orders: RunningService, place_order) -> None:
    user = make_user()
    placed = [await place_order(user=user) for _ in range(5)]
    expected = [order["id"] for order in reversed(placed)]
    seen: list[str] = []
    url = "/api/orders?limit=2"
    pages = 0
    while url:
        response = await orders.client.get(url, headers=user.headers)
        assert response.status_code == 200
        pages += 1
        seen += [order["id"] for order in response.json()]
        cursor = response.headers.get("X-Next-Cursor")
        if cursor is None:
            assert "Link" not in response.headers
            break
        link = response.headers["Link"]
        assert link.endswith('>; rel="next"')
        target = link[1 : link.index(">")]
        query = parse_qs(urlparse(target).query)
        assert query == {"limit": ["2"], "cursor": [cursor]}
        url = target
    assert seen == expected
    assert pages == 3


@pytest.mark.parametrize("orders", [{"max_open_orders": 200}], indirect=True)
async def test_the_default_page_is_100_orders(orders: RunningService, seed_ticket, place_order, publish) -> None:
    user = make_user()
    tickets = await asyncio.gather(*(seed_ticket() for _ in range(101)))
    for ticket in tickets:
        await place_order(user=user, ticket=ticket)
    first = await orders.client.get("/api/orders", headers=user.headers)
    assert len(first.json()) == 100
    rest = await orders.client.get(f"/api/orders?cursor={first.headers['X-Next-Cursor']}", headers=user.headers)
    assert len(rest.json()) == 1
    assert rest.json()[0]["ticket"]["id"] == str(tickets[0].id)


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5", "²", "\uff11"])
async def test_rejects_a_limit_out_of_range(orders: RunningService, limit) -> None:
    response = await orders.client.get("/api/orders", params={"limit": limit}, headers=make_user().headers)
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Limit must be between 1 and 100", "field": "limit"}]}


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "bm90LWEtY3Vyc29y",
        "MjAyNC0wMS0wMVQwMDowMDowMHxub3Bl",
        "%%%",
        # A valid ISO date with no UTC instant (year 0, year 10000): asyncpg cannot send it.
        "MDAwMS0wMS0wMVQwMDowMDowMCswMTowMHw2ZjFjMWY1ZS0xZDdlLTRiN2UtOWIxYS0yYTFkNWMzZTRmNTA",
        "OTk5OS0xMi0zMVQyMzo1OTo1OS0wMTowMHw2ZjFjMWY1ZS0xZDdlLTRiN2UtOWIxYS0yYTFkNWMzZTRmNTA",
    ],
)
async def test_rejects_a_malformed_cursor(orders: RunningService, cursor) -> None:
    response = await orders.client.get("/api/orders", params={"cursor": cursor}, headers=make_user().headers)
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Cursor is invalid", "field": "cursor"}]}


async def test_cancelling_publishes_order_cancelled_at_version_1(
    orders: RunningService, place_order, events, order_row
) -> None:
    user = make_user()
    order = await place_order(user=user)
    response = await orders.client.delete(f"/api/orders/{order['id']}", headers=user.headers)
    assert response.status_code == 204
    assert response.content == b""
    [cancelled] = await events.wait_for("order.cancelled")
    assert cancelled == {"id": order["id"], "version": 1, "ticket": {"id": order["ticket"]["id"]}}
    [captured] = [e for e in events.events if e.subject == "order.cancelled"]
    uuid.UUID(captured.headers["Nats-Msg-Id"])
    shown = (await orders.client.get(f"/api/orders/{order['id']}", headers=user.headers)).json()
    assert shown["status"] == "cancelled"
    assert shown["version"] == 1


async def test_cancelling_twice_publishes_one_order_cancelled(
    orders: RunningService, place_order, events, outbox_subjects
) -> None:
    user = make_user()
    order = await place_order(user=user)
    first = await orders.client.delete(f"/api/orders/{order['id']}", headers=user.headers)
    second = await orders.client.delete(f"/api/orders/{order['id']}", headers=user.headers)
    assert first.status_code == second.status_code == 204
    # A later event is a barrier: the relay publishes in commit order, so a second cancel would show by then.
    await place_order()
    await events.wait_for("order.created", 2)
    assert len(events.of("order.cancelled")) == 1
    assert await outbox_subjects() == ["order.created", "order.cancelled", "order.created"]


async def test_a_paid_order_cannot_be_cancelled(
    orders: RunningService, place_order, publish, order_row, outbox_subjects
) -> None:
    user = make_user()
    order = await place_order(user=user)
    await publish(PaymentCreated(id=uuid.uuid4(), order_id=uuid.UUID(order["id"]), stripe_id="ch_paid"))

    async def completed() -> bool:
        return (await order_row(order["id"])).status == "complete"

    await eventually(completed)
    response = await orders.client.delete(f"/api/orders/{order['id']}", headers=user.headers)
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Cannot cancel a completed order"}]}
    assert (await order_row(order["id"])).status == "complete"
    assert await outbox_subjects() == ["order.created"]


async def test_docs_and_probes_are_served(orders: RunningService) -> None:
    assert (await orders.client.get("/readyz")).json() == {"status": "ready"}
    paths = (await orders.client.get("/api/orders/openapi.json")).json()["paths"]
    assert set(paths) == {"/api/orders", "/api/orders/{order_id}"}
    limit = next(p for p in paths["/api/orders"]["get"]["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["type"], limit["schema"]["default"]) == ("integer", 100)


async def test_an_order_keeps_the_price_it_was_placed_at(orders: RunningService, seed_ticket, publish, ticket_row):
    # Issue 15 #3: the seller's edit races the order; orders hears of the new price after the order was placed.
    ticket = await seed_ticket(price="10.00")
    user = make_user()
    placed = (await create(orders, str(ticket.id), user)).json()
    assert placed["ticket"]["price"] == 10
    edited = TicketUpdated(
        id=ticket.id, version=1, title="edited", price=Decimal("999"), user_id=ticket.user_id, order_id=None
    )
    await publish(edited)

    async def edit_applied() -> bool:
        row = await ticket_row(ticket.id)
        return row is not None and row.version == 1

    await eventually(edit_applied)
    shown = (await orders.client.get(f"/api/orders/{placed['id']}", headers=user.headers)).json()
    assert shown["ticket"]["price"] == 10
    [listed] = (await orders.client.get("/api/orders", headers=user.headers)).json()
    assert listed["ticket"]["price"] == 10


async def test_buying_your_own_ticket_is_refused(orders: RunningService, seed_ticket) -> None:
    ticket = await seed_ticket()
    seller = make_user(user_id=ticket.user_id)
    response = await create(orders, str(ticket.id), seller)
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "You cannot buy your own ticket"}]}


@pytest.mark.parametrize("orders", [{"max_open_orders": 3}], indirect=True)
async def test_one_user_holds_at_most_max_open_orders(orders: RunningService, seed_ticket, publish) -> None:
    user = make_user()
    tickets = [await seed_ticket() for _ in range(5)]
    placed = [await create(orders, str(ticket.id), user) for ticket in tickets[:3]]
    assert [r.status_code for r in placed] == [201] * 3
    refused = await create(orders, str(tickets[3].id), user)
    assert refused.status_code == 409
    assert refused.json() == {"errors": [{"message": "You already hold 3 open orders; pay for or cancel one first"}]}
    # Someone else is not limited by this user's reservations.
    assert (await create(orders, str(tickets[3].id))).status_code == 201
    # A cancelled order no longer counts.
    cancelled = await orders.client.delete(f"/api/orders/{placed[0].json()['id']}", headers=user.headers)
    assert cancelled.status_code == 204
    assert (await create(orders, str(tickets[4].id), user)).status_code == 201


async def test_concurrent_orders_of_one_user_never_exceed_the_cap(orders: RunningService, seed_ticket) -> None:
    user = make_user()
    tickets = [await seed_ticket() for _ in range(14)]
    responses = await asyncio.gather(*(create(orders, str(ticket.id), user) for ticket in tickets))
    assert sorted(r.status_code for r in responses) == [201] * 10 + [409] * 4


def test_max_open_orders_defaults_to_10() -> None:
    from ticketing_orders.settings import Settings

    assert Settings.model_fields["max_open_orders"].default == 10
