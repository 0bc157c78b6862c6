"""The /api/tickets routes, case by case as the contract lists them."""

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import jwt
import pytest
from sqlalchemy import select

from ticketing_common.auth import create_token
from ticketing_testing import TEST_JWT_KEY, eventually, make_user
from ticketing_tickets import deps
from ticketing_tickets.listeners import OrderCreatedListener
from ticketing_tickets.models import Ticket

NOT_AUTHORIZED = {"errors": [{"message": "Not authorized"}]}
NOT_FOUND = {"errors": [{"message": "Not Found"}]}


async def stored_ticket(tickets, ticket_id: str) -> Ticket:
    async with tickets.sessionmaker() as session:
        return (await session.execute(select(Ticket).where(Ticket.id == uuid.UUID(ticket_id)))).scalar_one()


async def reserve(ticket_id: str, publish, wait_handled, make_order_created):
    created = make_order_created(ticket_id)
    await publish(created)
    await wait_handled(created.event_id)
    return created


# --- POST /api/tickets -------------------------------------------------------------------------------------------


async def test_create_returns_the_new_ticket_at_version_0(tickets, seller) -> None:
    response = await tickets.client.post(
        "/api/tickets", json={"title": "concert", "price": 10.5}, headers=seller.headers
    )
    assert response.status_code == 201
    body = response.json()
    assert body == {
        "id": body["id"],
        "title": "concert",
        "price": 10.5,
        "userId": str(seller.id),
        "version": 0,
        "orderId": None,
    }
    uuid.UUID(body["id"])


async def test_create_stores_the_price_exactly_and_the_title_trimmed(tickets, seller) -> None:
    response = await tickets.client.post(
        "/api/tickets", json={"title": "  gig  ", "price": 0.1}, headers=seller.headers
    )
    assert response.json()["title"] == "gig"
    row = await stored_ticket(tickets, response.json()["id"])
    assert row.title == "gig"
    assert row.price == Decimal("0.10")
    assert isinstance(row.price, Decimal)


@pytest.mark.parametrize("body", [{"title": "x" * 200, "price": 1_000_000}, {"title": "x", "price": 0.01}])
async def test_create_accepts_the_boundaries(tickets, seller, body) -> None:
    response = await tickets.client.post("/api/tickets", json=body, headers=seller.headers)
    assert response.status_code == 201
    assert response.json()["price"] == body["price"]


async def test_create_refuses_anonymous_callers(tickets) -> None:
    response = await tickets.client.post("/api/tickets", json={"title": "concert", "price": 10})
    assert response.status_code == 401
    assert response.json() == NOT_AUTHORIZED


def _bad_tokens() -> dict[str, str]:
    user_id, now = uuid.uuid4(), datetime.now(UTC)
    claims = {"sub": str(user_id), "email": "x@example.com", "iat": int(now.timestamp())}
    return {
        "wrong key": make_user(key="some-other-key-0123456789abcdef-0123456789").token,
        "expired": create_token(
            user_id=user_id, email="x@example.com", key=TEST_JWT_KEY, ttl_seconds=60, now=now - timedelta(hours=2)
        ),
        "alg none": jwt.encode({**claims, "exp": int(now.timestamp()) + 3600}, None, algorithm="none"),
        "garbage": "not.a.jwt",
    }


@pytest.mark.parametrize("kind", list(_bad_tokens()))
async def test_create_and_update_treat_an_invalid_token_as_anonymous(tickets, create_ticket, kind) -> None:
    token = _bad_tokens()[kind]
    ticket = await create_ticket()
    for headers in ({"Cookie": f"session={token}"}, {"Authorization": f"Bearer {token}"}):
        created = await tickets.client.post("/api/tickets", json={"title": "concert", "price": 10}, headers=headers)
        updated = await tickets.client.put(
            f"/api/tickets/{ticket['id']}", json={"title": "x", "price": 1}, headers=headers
        )
        assert created.status_code == updated.status_code == 401
        assert created.json() == updated.json() == NOT_AUTHORIZED


async def test_create_accepts_a_bearer_token(tickets, seller) -> None:
    response = await tickets.client.post(
        "/api/tickets", json={"title": "concert", "price": 10}, headers={"Authorization": f"Bearer {seller.token}"}
    )
    assert response.status_code == 201
    assert response.json()["userId"] == str(seller.id)


TITLE_REQUIRED = ("title", "Title is required")
PRICE_INVALID = ("price", "Price must be greater than 0")

INVALID_BODIES = [
    pytest.param({"price": 10}, *TITLE_REQUIRED, id="title missing"),
    pytest.param({"title": "", "price": 10}, *TITLE_REQUIRED, id="title empty"),
    pytest.param({"title": "   \t ", "price": 10}, *TITLE_REQUIRED, id="title blank"),
    pytest.param({"title": "x" * 201, "price": 10}, *TITLE_REQUIRED, id="title too long"),
    pytest.param({"title": 12, "price": 10}, *TITLE_REQUIRED, id="title a number"),
    pytest.param({"title": None, "price": 10}, *TITLE_REQUIRED, id="title null"),
    pytest.param({"title": ["a"], "price": 10}, *TITLE_REQUIRED, id="title a list"),
    pytest.param({"title": "concert"}, *PRICE_INVALID, id="price missing"),
    pytest.param({"title": "concert", "price": 0}, *PRICE_INVALID, id="price zero"),
    pytest.param({"title": "concert", "price": -10}, *PRICE_INVALID, id="price negative"),
    pytest.param({"title": "concert", "price": "10"}, *PRICE_INVALID, id="price a string"),
    pytest.param({"title": "concert", "price": True}, *PRICE_INVALID, id="price a boolean"),
    pytest.param({"title": "concert", "price": None}, *PRICE_INVALID, id="price null"),
    pytest.param({"title": "concert", "price": 1_000_000.01}, "price", "Price must be at most 1,000,000", id="too big"),
    pytest.param({"title": "concert", "price": 1.234}, "price", "Price must have at most 2 decimals", id="3 decimals"),
]


@pytest.mark.parametrize(("body", "field", "message"), INVALID_BODIES)
async def test_create_rejects_invalid_fields(tickets, seller, body, field, message) -> None:
    response = await tickets.client.post("/api/tickets", json=body, headers=seller.headers)
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": message, "field": field}]}


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_create_rejects_non_finite_prices_sent_as_raw_json(tickets, seller, raw) -> None:
    content = f'{{"title": "concert", "price": {raw}}}'.encode()
    headers = {**seller.headers, "content-type": "application/json"}
    response = await tickets.client.post("/api/tickets", content=content, headers=headers)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "price"


async def test_create_reports_every_bad_field(tickets, seller) -> None:
    response = await tickets.client.post("/api/tickets", json={"title": " ", "price": -1}, headers=seller.headers)
    assert response.status_code == 400
    assert response.json() == {
        "errors": [
            {"message": "Title is required", "field": "title"},
            {"message": "Price must be greater than 0", "field": "price"},
        ]
    }


async def test_create_rejects_malformed_json(tickets, seller) -> None:
    headers = {**seller.headers, "content-type": "application/json"}
    response = await tickets.client.post("/api/tickets", content=b'{"title": ', headers=headers)
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Request body must be valid JSON"}]}


async def test_create_rejects_a_body_that_is_not_an_object(tickets, seller) -> None:
    response = await tickets.client.post("/api/tickets", json=["concert", 10], headers=seller.headers)
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Request body must be a JSON object"}]}


# --- GET /api/tickets/{id} ---------------------------------------------------------------------------------------


async def test_show_returns_the_ticket_to_anyone(tickets, create_ticket) -> None:
    created = await create_ticket(title="show me", price=99.99)
    response = await tickets.client.get(f"/api/tickets/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created


async def test_show_returns_a_reserved_ticket_with_its_order(
    tickets, create_ticket, publish, wait_handled, make_order_created
) -> None:
    created = await create_ticket()
    order = await reserve(created["id"], publish, wait_handled, make_order_created)
    body = (await tickets.client.get(f"/api/tickets/{created['id']}")).json()
    assert body["orderId"] == str(order.id)
    assert body["version"] == 1


async def test_show_is_404_for_an_unknown_id(tickets) -> None:
    response = await tickets.client.get(f"/api/tickets/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "0" * 40, "%20"])
async def test_show_is_404_for_a_malformed_id(tickets, bad_id) -> None:
    response = await tickets.client.get(f"/api/tickets/{bad_id}")
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


# --- GET /api/tickets --------------------------------------------------------------------------------------------


async def test_list_returns_unreserved_tickets_newest_first(tickets, create_ticket) -> None:
    first = await create_ticket(title="first")
    second = await create_ticket(title="second")
    third = await create_ticket(title="third")
    response = await tickets.client.get("/api/tickets")
    assert response.status_code == 200
    assert response.json() == [third, second, first]
    assert "link" not in response.headers
    assert "x-next-cursor" not in response.headers


async def test_list_is_empty_without_tickets(tickets) -> None:
    response = await tickets.client.get("/api/tickets")
    assert response.status_code == 200
    assert response.json() == []


async def test_list_leaves_out_reserved_tickets(
    tickets, create_ticket, publish, wait_handled, make_order_created
) -> None:
    kept = await create_ticket()
    reserved = await create_ticket()
    await reserve(reserved["id"], publish, wait_handled, make_order_created)
    ids = [t["id"] for t in (await tickets.client.get("/api/tickets")).json()]
    assert ids == [kept["id"]]


async def test_list_defaults_to_100_tickets(tickets, create_ticket) -> None:
    for _ in range(101):
        await create_ticket()
    response = await tickets.client.get("/api/tickets")
    assert len(response.json()) == 100
    assert response.headers["x-next-cursor"]


async def test_list_pages_with_limit_and_the_next_cursor(tickets, create_ticket) -> None:
    created = [await create_ticket(title=f"t{i}") for i in range(7)]
    newest_first = [t["id"] for t in reversed(created)]

    page1 = await tickets.client.get("/api/tickets", params={"limit": 3})
    assert [t["id"] for t in page1.json()] == newest_first[:3]
    cursor = page1.headers["x-next-cursor"]
    assert page1.headers["link"] == f'</api/tickets?limit=3&cursor={cursor}>; rel="next"'

    page2 = await tickets.client.get("/api/tickets", params={"limit": 3, "cursor": cursor})
    assert [t["id"] for t in page2.json()] == newest_first[3:6]

    # Following the Link header as a client would reaches the last page, which has no next link.
    link = page2.headers["link"]
    url = link[link.index("<") + 1 : link.index(">")]
    page3 = await tickets.client.get(url)
    assert [t["id"] for t in page3.json()] == newest_first[6:]
    assert "link" not in page3.headers
    assert "x-next-cursor" not in page3.headers


async def test_paging_is_stable_when_tickets_are_added_meanwhile(tickets, create_ticket) -> None:
    older = [await create_ticket() for _ in range(4)]
    page1 = await tickets.client.get("/api/tickets", params={"limit": 2})
    await create_ticket(title="newer than the cursor")
    page2 = await tickets.client.get("/api/tickets", params={"limit": 2, "cursor": page1.headers["x-next-cursor"]})
    assert [t["id"] for t in page2.json()] == [older[1]["id"], older[0]["id"]]


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "2.5", "", "²", "\uff11"])
async def test_list_rejects_a_bad_limit(tickets, limit) -> None:
    response = await tickets.client.get("/api/tickets", params={"limit": limit})
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Limit must be between 1 and 100", "field": "limit"}]}


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "bm90LWEtY3Vyc29y",
        "",
        "MjAyNi0wMS0wMVQwMDowMDowMHxub3QtYS11dWlk",
        # A valid ISO date with no UTC instant (year 0, year 10000): asyncpg cannot send it.
        "MDAwMS0wMS0wMVQwMDowMDowMCswMTowMHw2ZjFjMWY1ZS0xZDdlLTRiN2UtOWIxYS0yYTFkNWMzZTRmNTA",
        "OTk5OS0xMi0zMVQyMzo1OTo1OS0wMTowMHw2ZjFjMWY1ZS0xZDdlLTRiN2UtOWIxYS0yYTFkNWMzZTRmNTA",
    ],
)
async def test_list_rejects_a_malformed_cursor(tickets, cursor) -> None:
    response = await tickets.client.get("/api/tickets", params={"cursor": cursor})
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Cursor is invalid", "field": "cursor"}]}


# --- PUT /api/tickets/{id} ---------------------------------------------------------------------------------------


async def test_update_changes_the_ticket_and_bumps_the_version(tickets, seller, create_ticket) -> None:
    created = await create_ticket(title="before", price=10)
    response = await tickets.client.put(
        f"/api/tickets/{created['id']}", json={"title": "  after ", "price": 12.34}, headers=seller.headers
    )
    assert response.status_code == 200
    assert response.json() == {**created, "title": "after", "price": 12.34, "version": 1}
    assert (await tickets.client.get(f"/api/tickets/{created['id']}")).json() == response.json()
    again = await tickets.client.put(
        f"/api/tickets/{created['id']}", json={"title": "again", "price": 5}, headers=seller.headers
    )
    assert again.json()["version"] == 2
    row = await stored_ticket(tickets, created["id"])
    assert (row.title, row.price, row.version) == ("again", Decimal("5.00"), 2)


async def test_update_refuses_anonymous_callers(tickets, create_ticket) -> None:
    created = await create_ticket()
    response = await tickets.client.put(f"/api/tickets/{created['id']}", json={"title": "mine now", "price": 1})
    assert response.status_code == 401
    assert response.json() == NOT_AUTHORIZED


async def test_update_refuses_someone_who_is_not_the_owner(tickets, create_ticket) -> None:
    created = await create_ticket(title="original")
    response = await tickets.client.put(
        f"/api/tickets/{created['id']}", json={"title": "stolen", "price": 1}, headers=make_user().headers
    )
    assert response.status_code == 401
    assert response.json() == NOT_AUTHORIZED
    assert (await stored_ticket(tickets, created["id"])).title == "original"


async def test_update_is_404_for_an_unknown_ticket(tickets, seller) -> None:
    response = await tickets.client.put(
        f"/api/tickets/{uuid.uuid4()}", json={"title": "x", "price": 1}, headers=seller.headers
    )
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


async def test_update_is_404_for_a_malformed_id(tickets, seller) -> None:
    response = await tickets.client.put("/api/tickets/nope", json={"title": "x", "price": 1}, headers=seller.headers)
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


@pytest.mark.parametrize(("body", "field", "message"), INVALID_BODIES)
async def test_update_rejects_invalid_fields(tickets, seller, create_ticket, body, field, message) -> None:
    created = await create_ticket(title="unchanged")
    response = await tickets.client.put(f"/api/tickets/{created['id']}", json=body, headers=seller.headers)
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": message, "field": field}]}
    row = await stored_ticket(tickets, created["id"])
    assert (row.title, row.version) == ("unchanged", 0)


async def test_update_rejects_a_reserved_ticket(
    tickets, seller, create_ticket, publish, wait_handled, make_order_created
) -> None:
    created = await create_ticket(title="reserved")
    await reserve(created["id"], publish, wait_handled, make_order_created)
    response = await tickets.client.put(
        f"/api/tickets/{created['id']}", json={"title": "changed", "price": 1}, headers=seller.headers
    )
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Cannot edit a reserved ticket"}]}
    row = await stored_ticket(tickets, created["id"])
    assert (row.title, row.version) == ("reserved", 1)


async def test_a_reserved_ticket_is_still_not_yours_to_edit(
    tickets, create_ticket, publish, wait_handled, make_order_created
) -> None:
    created = await create_ticket()
    await reserve(created["id"], publish, wait_handled, make_order_created)
    response = await tickets.client.put(
        f"/api/tickets/{created['id']}", json={"title": "x", "price": 1}, headers=make_user().headers
    )
    assert response.status_code == 401


# A short ack_wait: the pull the stopped listener left outstanding gives its event back in 3 s, not the default 30.
@pytest.mark.parametrize("tickets", [pytest.param({"nats_ack_wait_seconds": 3}, id="ack-wait-3s")], indirect=True)
async def test_an_edit_while_only_another_tickets_order_is_on_its_way_waits_for_it_and_succeeds(
    tickets, seller, create_ticket, publish, make_order_created, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The edit fence waits for the order events already on the bus rather than answering 503 at once; those for
    other tickets are applied meanwhile, and the edit goes through (the soak's edits were all held before)."""
    monkeypatch.setattr(deps, "ORDER_EVENTS_WAIT_SECONDS", 30.0)  # room for the stopped pull's ack_wait
    mine = await create_ticket(title="mine", price=20)
    other = await create_ticket(title="other", price=30)
    [listener] = [li for li in tickets.runtime.listeners if isinstance(li, OrderCreatedListener)]
    await listener.stop()
    created = make_order_created(other["id"], price=30)
    await publish(created)

    editing = asyncio.create_task(
        tickets.client.put(f"/api/tickets/{mine['id']}", json={"title": "mine", "price": 25}, headers=seller.headers)
    )
    await asyncio.sleep(0.3)
    assert not editing.done()  # held while the other ticket's order.created waits, not answered 503
    await listener.start()
    response = await editing
    assert response.status_code == 200, response.text
    assert (await stored_ticket(tickets, other["id"])).order_id == created.id  # applied while the edit waited
    row = await stored_ticket(tickets, mine["id"])
    assert (row.price, row.version, row.order_id) == (Decimal(25), 1, None)


# A short ack_wait: the pull the stopped listener left outstanding gives its event back in 3 s, not the default 30.
@pytest.mark.parametrize("tickets", [pytest.param({"nats_ack_wait_seconds": 3}, id="ack-wait-3s")], indirect=True)
async def test_an_edit_while_an_order_for_the_ticket_is_on_its_way_is_503_then_refused_as_reserved(
    tickets, seller, create_ticket, publish, make_order_created
) -> None:
    """Issue 15 #3: tickets refuses to edit a ticket an order holds even before its replica has heard of the order."""
    ticket = await create_ticket(title="gig", price=20)
    [listener] = [li for li in tickets.runtime.listeners if isinstance(li, OrderCreatedListener)]
    await listener.stop()  # tickets falls behind: the order.created below waits on the bus
    created = make_order_created(ticket["id"], price=20)
    await publish(created)
    url = f"/api/tickets/{ticket['id']}"

    response = await tickets.client.put(url, json={"title": "gig", "price": 999}, headers=seller.headers)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    assert response.json() == {
        "errors": [{"message": "The ticket may be held by an order being placed; retry shortly"}]
    }
    row = await stored_ticket(tickets, ticket["id"])
    assert (row.title, row.price, row.version, row.order_id) == ("gig", Decimal(20), 0, None)

    await listener.start()  # caught up: the client's retry meets the order

    async def retried() -> httpx.Response:
        answer = await tickets.client.put(url, json={"title": "gig", "price": 999}, headers=seller.headers)
        assert answer.status_code != 503, answer.text
        return answer

    # A pull the stopped subscription had outstanding may hold the event until its ack_wait has passed.
    refused = await eventually(retried, timeout=listener.effective_ack_wait + 10)
    assert refused.status_code == 400, refused.text
    assert refused.json() == {"errors": [{"message": "Cannot edit a reserved ticket"}]}
    row = await stored_ticket(tickets, ticket["id"])
    assert (row.price, row.version, row.order_id) == (Decimal(20), 1, created.id)


async def test_an_edit_with_every_order_event_applied_is_not_held_back(tickets, seller, create_ticket) -> None:
    ticket = await create_ticket(price=20)
    response = await tickets.client.put(
        f"/api/tickets/{ticket['id']}", json={"title": "moved", "price": 25}, headers=seller.headers
    )
    assert response.status_code == 200, response.text
    assert "Retry-After" not in response.headers


# --- the service around the routes -------------------------------------------------------------------------------


async def test_responses_carry_the_request_id(tickets, create_ticket) -> None:
    created = await create_ticket()
    response = await tickets.client.get(f"/api/tickets/{created['id']}", headers={"X-Request-ID": "req-tickets-1"})
    assert response.headers["x-request-id"] == "req-tickets-1"


async def test_health_readiness_and_docs(tickets) -> None:
    assert (await tickets.client.get("/healthz")).json() == {"status": "ok"}
    assert (await tickets.client.get("/readyz")).json() == {"status": "ready"}
    paths = (await tickets.client.get("/api/tickets/openapi.json")).json()["paths"]
    assert set(paths) == {"/api/tickets", "/api/tickets/{id}"}
    assert set(paths["/api/tickets"]) == {"get", "post"}
    assert set(paths["/api/tickets/{id}"]) == {"get", "put"}
    assert (await tickets.client.get("/api/tickets/docs")).status_code == 200


@pytest.mark.parametrize("title", ["a\x00b", "\ud800", "x\udfffy"])
async def test_create_refuses_a_title_postgres_cannot_store_with_a_400(tickets, seller, title) -> None:
    response = await tickets.client.post(
        "/api/tickets",
        content=json.dumps({"title": title, "price": 1}).encode(),  # \u escapes: httpx would not encode a surrogate
        headers={**seller.headers, "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "title"


async def test_create_checks_the_price_as_written_not_as_a_float(tickets, seller) -> None:
    response = await tickets.client.post(
        "/api/tickets",
        content=b'{"title": "x", "price": 1000000.0000000000000001}',
        headers={**seller.headers, "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Price must be at most 1,000,000", "field": "price"}]}
