"""orders while its database goes away under a request: the race behind 'cannot switch to state 15'."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest
from sqlalchemy import text

from ticketing_common.db import asyncpg_dsn
from ticketing_common.events import TicketCreated
from ticketing_orders import service
from ticketing_orders.app import create_app
from ticketing_orders.listeners import TicketCreatedListener
from ticketing_orders.settings import Settings
from ticketing_testing import eventually, id_minted, make_user
from ticketing_testing.plugin import RunningService, Servers, ServiceStarter
from ticketing_testing.proxy import TcpProxy


@pytest.fixture
async def db_proxy(clean_state: Servers) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy.for_url(clean_state.database("ticketing_orders"))
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def orders_behind_proxy(
    start_service: ServiceStarter, db_proxy: TcpProxy, clean_state: Servers
) -> RunningService:
    url = db_proxy.url(clean_state.database("ticketing_orders"))
    return await start_service(create_app, Settings, "ticketing_orders", database_url=url)


async def _terminate(servers: Servers, pid: int) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(servers.database("ticketing_orders")))
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


async def test_a_refused_reservation_stays_a_400_when_the_server_ends_the_session_before_the_rollback(
    orders_behind_proxy: RunningService, db_proxy: TcpProxy, clean_state: Servers
) -> None:
    """The chaos run's 500: a TicketReserved whose rollback raised InternalClientError.

    Between the failed INSERT and the ROLLBACK, Postgres ended the session (a restart; here pg_terminate_backend) and
    sent its FATAL ErrorResponse before closing the socket. asyncpg, idle, took that message as a protocol error and
    entered its error-consuming state waiting for a ReadyForQuery that never comes; the socket was not yet seen
    closed, so the ROLLBACK that followed met "cannot switch to state 15; another operation (2) is in progress", and
    that error replaced the TicketReserved. The proxy holds back the close so the window is as wide as a test needs.
    """
    database = orders_behind_proxy.runtime.database
    ticket_id = uuid.uuid4()
    async with database.transaction() as uow:
        await uow.session.execute(
            text("INSERT INTO tickets (id, title, price, version) VALUES (:id, 'race', 10, 0)"), {"id": ticket_id}
        )
        await service.create_order(
            uow=uow, user_id=uuid.uuid4(), ticket_id=ticket_id, expiration_seconds=60, max_open_orders=10
        )

    async def refuse_while_the_server_ends_the_session() -> None:
        async with database.transaction() as uow:
            pid = await (await uow.connection()).fetchval("SELECT pg_backend_pid()")
            try:
                await service.create_order(
                    uow=uow, user_id=uuid.uuid4(), ticket_id=ticket_id, expiration_seconds=60, max_open_orders=10
                )
            except service.TicketReserved:
                await _terminate(clean_state, pid)

                async def fatal_delivered() -> bool:
                    return db_proxy.holding

                await eventually(fatal_delivered)
                await asyncio.sleep(0.1)  # let asyncpg read the FATAL message; its close is held back
                raise

    db_proxy.hold_server_close = True
    with pytest.raises(service.TicketReserved):
        await refuse_while_the_server_ends_the_session()

    # The half-dead connection was thrown away, not pooled: the next transactions get working connections.
    db_proxy.release_held()
    for _ in range(3):
        async with database.transaction() as uow:
            assert (await uow.session.execute(text("SELECT 1"))).scalar() == 1


# A short ack_wait: a pull the stopped listener left outstanding gives its event back in 3 s, not the default 30.
@pytest.mark.parametrize("orders", [pytest.param({"nats_ack_wait_seconds": 3}, id="ack-wait-3s")], indirect=True)
async def test_a_ticket_its_replica_has_not_heard_of_yet_is_503_not_yet_known_then_orderable(
    orders: RunningService, publish
) -> None:
    """Not found, or not yet? Orders answers 503 'not yet known' while its ticket.created consumer is behind."""
    [listener] = [li for li in orders.runtime.listeners if isinstance(li, TicketCreatedListener)]
    await listener.stop()
    ticket = TicketCreated(id=uuid.uuid4(), version=0, title="just listed", price=Decimal("5"), user_id=uuid.uuid4())
    await publish(ticket)
    user = make_user()

    response = await orders.client.post("/api/orders", json={"ticketId": str(ticket.id)}, headers=user.headers)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    assert response.json() == {"errors": [{"message": "Not yet known; retry shortly"}]}

    await listener.start()

    async def ordered() -> bool:
        answer = await orders.client.post("/api/orders", json={"ticketId": str(ticket.id)}, headers=user.headers)
        return answer.status_code == 201

    # A pull the stopped subscription had outstanding may have taken the event: JetStream redelivers it only once its
    # ack_wait has passed, so wait past that.
    await eventually(ordered, timeout=listener.effective_ack_wait + 10)


async def test_a_ticket_minted_moments_ago_that_no_event_has_brought_is_503_not_yet_known(
    orders: RunningService,
) -> None:
    """Tickets committed it, but its ticket.created still waits in tickets' outbox (a relay killed, or NATS
    restarting): the consumer is caught up, yet the ticket exists. Its UUIDv7 id is seconds old: "not yet", not 404."""
    user = make_user()
    response = await orders.client.post(
        "/api/orders", json={"ticketId": str(id_minted(seconds_ago=2))}, headers=user.headers
    )
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    assert response.json() == {"errors": [{"message": "Not yet known; retry shortly"}]}


async def test_a_ticket_id_minted_before_the_window_beyond_the_clock_skew_or_not_a_uuid7_is_404(
    orders: RunningService,
) -> None:
    user = make_user()
    window = orders.settings.not_yet_known_seconds
    for ticket_id in (id_minted(seconds_ago=window + 5), id_minted(seconds_ago=-3600), uuid.uuid4()):
        response = await orders.client.post("/api/orders", json={"ticketId": str(ticket_id)}, headers=user.headers)
        assert response.status_code == 404, (ticket_id, response.text)
        assert "Retry-After" not in response.headers
