"""orders listeners through the real broker: version order, idempotency, expirations and payments."""

import asyncio
import json
import logging
import random
import uuid
from collections import Counter
from decimal import Decimal

from sqlalchemy import select

from ticketing_common.db import DeadLetter, OutboxEvent
from ticketing_common.events import ExpirationComplete, PaymentCreated, TicketCreated, TicketUpdated
from ticketing_orders import service
from ticketing_testing import eventually, make_user, parked
from ticketing_testing.plugin import RunningService


def ticket_history(versions: int, *, title: str = "show") -> list[TicketCreated | TicketUpdated]:
    """ticket.created v0 then ticket.updated v1..v(versions-1), each changing title, price and reservation."""
    ticket_id, owner = uuid.uuid4(), uuid.uuid4()
    history: list[TicketCreated | TicketUpdated] = [
        TicketCreated(id=ticket_id, version=0, title=f"{title} v0", price=Decimal("10.00"), user_id=owner)
    ]
    for version in range(1, versions):
        history.append(
            TicketUpdated(
                id=ticket_id,
                version=version,
                title=f"{title} v{version}",
                price=Decimal("10.00") + version,
                user_id=owner,
                order_id=uuid.uuid4() if version % 2 else None,
            )
        )
    return history


def snapshot(row) -> tuple:
    return (row.title, row.price, row.version, row.order_id)


def expected(event: TicketCreated | TicketUpdated) -> tuple:
    return (event.title, event.price, event.version, getattr(event, "order_id", None))


async def wait_for_version(ticket_row, ticket_id: uuid.UUID, version: int):
    async def at_version():
        row = await ticket_row(ticket_id)
        return row if row is not None and row.version == version else None

    return await eventually(at_version, timeout=60)


async def test_listeners_bind_the_contracts_durable_names(orders: RunningService) -> None:
    durables = {listener.durable for listener in orders.runtime.listeners}
    assert durables == {
        "orders-ticket-created",
        "orders-ticket-updated",
        "orders-expiration-complete",
        "orders-payment-created",
    }
    info = await orders.runtime.bus.js.consumer_info("TICKETS", "orders-ticket-updated")
    assert info.config.durable_name == "orders-ticket-updated"


async def test_the_replica_applies_ticket_versions_in_order(orders: RunningService, publish, ticket_row) -> None:
    history = ticket_history(3)
    for event in history:
        await publish(event)
    row = await wait_for_version(ticket_row, history[0].id, 2)
    assert snapshot(row) == expected(history[-1])
    assert row.price == Decimal("12.00")


async def test_a_duplicate_ticket_event_under_a_new_message_id_changes_nothing(
    orders: RunningService, publish, ticket_row, handled
) -> None:
    created, first, second = ticket_history(3)
    for event in (created, first, second):
        await publish(event)
    await wait_for_version(ticket_row, created.id, 2)
    created_again, first_again = str(uuid.uuid4()), str(uuid.uuid4())
    await publish(created.model_copy(update={"title": "rewritten"}), message_id=created_again)
    await publish(first, message_id=first_again)

    async def both_seen() -> bool:
        return await handled("orders-ticket-created", created_again) and await handled(
            "orders-ticket-updated", first_again
        )

    await eventually(both_seen)
    assert snapshot(await ticket_row(created.id)) == expected(second)


async def test_an_out_of_order_ticket_update_waits_for_its_predecessor(
    orders: RunningService, publish, ticket_row
) -> None:
    created, first, second = ticket_history(3)
    await publish(created)
    await wait_for_version(ticket_row, created.id, 0)
    await publish(second)
    await parked(orders.runtime.bus.js, orders.runtime.database, "TICKETS", "orders-ticket-updated")
    assert snapshot(await ticket_row(created.id)) == expected(created)
    await publish(first)
    row = await wait_for_version(ticket_row, created.id, 2)
    assert snapshot(row) == expected(second)


async def test_an_update_before_the_ticket_exists_waits_for_its_creation(
    orders: RunningService, publish, ticket_row
) -> None:
    created, first = ticket_history(2)
    await publish(first)
    await parked(orders.runtime.bus.js, orders.runtime.database, "TICKETS", "orders-ticket-updated")
    assert await ticket_row(created.id) is None
    await publish(created)
    row = await wait_for_version(ticket_row, created.id, 1)
    assert snapshot(row) == expected(first)


async def test_a_shuffled_duplicated_sequence_ends_as_the_in_order_one(
    orders: RunningService, publish, ticket_row
) -> None:
    rng = random.Random(20240611)
    in_order = [ticket_history(5, title=f"ticket {n}") for n in range(4)]
    shuffled = [ticket_history(5, title=f"ticket {n}") for n in range(4)]
    for history in in_order:
        for event in history:
            await publish(event)
    messages = [(event, str(event.event_id)) for history in shuffled for event in history]
    # Duplicates both kinds: the same message again (JetStream drops it) and the same event under a new id.
    messages += [(event, str(event.event_id)) for event, _ in rng.sample(messages, 5)]
    messages += [(event, str(uuid.uuid4())) for event, _ in rng.sample(messages, 8)]
    rng.shuffle(messages)
    for event, message_id in messages:
        await publish(event, message_id=message_id)

    ordered_rows = [await wait_for_version(ticket_row, h[0].id, 4) for h in in_order]
    shuffled_rows = [await wait_for_version(ticket_row, h[0].id, 4) for h in shuffled]
    assert [snapshot(r) for r in shuffled_rows] == [snapshot(r) for r in ordered_rows]
    assert [snapshot(r) for r in shuffled_rows] == [expected(h[-1]) for h in shuffled]


async def test_expiration_cancels_a_created_order_and_publishes_order_cancelled(
    orders: RunningService, place_order, publish, events, order_row
) -> None:
    order = await place_order()
    await publish(ExpirationComplete(order_id=uuid.UUID(order["id"])))
    [cancelled] = await events.wait_for("order.cancelled")
    assert cancelled == {"id": order["id"], "version": 1, "ticket": {"id": order["ticket"]["id"]}}
    row = await order_row(order["id"])
    assert (row.status, row.version) == ("cancelled", 1)


async def test_a_duplicate_expiration_publishes_one_order_cancelled(
    orders: RunningService, place_order, publish, events, handled, outbox_subjects
) -> None:
    order = await place_order()
    expiration = ExpirationComplete(order_id=uuid.UUID(order["id"]))
    again = str(uuid.uuid4())
    await publish(expiration)
    await publish(expiration, message_id=again)
    await eventually(lambda: handled("orders-expiration-complete", again))
    await place_order()  # a barrier: published after anything the duplicate could have caused
    await events.wait_for("order.created", 2)
    assert len(events.of("order.cancelled")) == 1
    assert await outbox_subjects() == ["order.created", "order.cancelled", "order.created"]


async def test_expiration_leaves_a_complete_order_alone(
    orders: RunningService, place_order, publish, order_row, handled, outbox_subjects
) -> None:
    order = await place_order()
    await publish(PaymentCreated(id=uuid.uuid4(), order_id=uuid.UUID(order["id"]), stripe_id="ch_ok"))

    async def completed() -> bool:
        return (await order_row(order["id"])).status == "complete"

    await eventually(completed)
    expiration = ExpirationComplete(order_id=uuid.UUID(order["id"]))
    await publish(expiration)
    await eventually(lambda: handled("orders-expiration-complete", str(expiration.event_id)))
    row = await order_row(order["id"])
    assert (row.status, row.version) == ("complete", 1)
    assert await outbox_subjects() == ["order.created"]


async def test_expiration_of_an_unknown_order_is_acked_with_a_warning(
    orders: RunningService, publish, handled, caplog
) -> None:
    expiration = ExpirationComplete(order_id=uuid.uuid4())
    with caplog.at_level(logging.WARNING, logger="ticketing.orders"):
        await publish(expiration)
        await eventually(lambda: handled("orders-expiration-complete", str(expiration.event_id)))
    assert f"expiration.complete for unknown order {expiration.order_id} ignored" in caplog.text
    async with orders.sessionmaker() as session:
        assert (await session.execute(select(DeadLetter))).first() is None


async def test_a_payment_completes_the_order_without_publishing(
    orders: RunningService, place_order, publish, order_row, outbox_subjects
) -> None:
    user = make_user()
    order = await place_order(user=user)
    payment = PaymentCreated(id=uuid.uuid4(), order_id=uuid.UUID(order["id"]), stripe_id="ch_123")
    await publish(payment)

    async def completed() -> bool:
        return (await order_row(order["id"])).status == "complete"

    await eventually(completed)
    row = await order_row(order["id"])
    assert (row.version, row.payment_id, row.stripe_id, row.refund_status) == (1, payment.id, "ch_123", None)
    shown = (await orders.client.get(f"/api/orders/{order['id']}", headers=user.headers)).json()
    assert (shown["status"], shown["version"]) == ("complete", 1)
    assert "refund" not in shown
    assert await outbox_subjects() == ["order.created"]


async def test_a_duplicate_payment_changes_nothing(
    orders: RunningService, place_order, publish, order_row, handled, caplog
) -> None:
    order = await place_order()
    payment = PaymentCreated(id=uuid.uuid4(), order_id=uuid.UUID(order["id"]), stripe_id="ch_dup")
    await publish(payment)
    again = str(uuid.uuid4())
    with caplog.at_level(logging.WARNING, logger="ticketing.orders"):
        await publish(payment, message_id=again)
        await eventually(lambda: handled("orders-payment-created", again))
    row = await order_row(order["id"])
    assert (row.status, row.version, row.payment_id, row.refund_status) == ("complete", 1, payment.id, None)
    assert [record.message for record in caplog.records if record.name == "ticketing.orders"] == []


async def test_a_payment_for_a_cancelled_order_is_marked_for_refund(
    orders: RunningService, place_order, publish, order_row, handled, caplog
) -> None:
    user = make_user()
    order = await place_order(user=user)
    assert (await orders.client.delete(f"/api/orders/{order['id']}", headers=user.headers)).status_code == 204
    payment = PaymentCreated(id=uuid.uuid4(), order_id=uuid.UUID(order["id"]), stripe_id="ch_late")
    with caplog.at_level(logging.WARNING, logger="ticketing.orders"):
        await publish(payment)
        await eventually(lambda: handled("orders-payment-created", str(payment.event_id)))
    row = await order_row(order["id"])
    assert (row.status, row.version, row.refund_status) == ("cancelled", 1, "pending")
    assert (row.payment_id, row.stripe_id) == (payment.id, "ch_late")
    assert f"payment {payment.id} (stripe ch_late) arrived for cancelled order {order['id']}" in caplog.text
    shown = (await orders.client.get(f"/api/orders/{order['id']}", headers=user.headers)).json()
    assert shown["status"] == "cancelled"
    assert shown["refund"] == {"status": "pending", "paymentId": str(payment.id)}
    listed = (await orders.client.get("/api/orders", headers=user.headers)).json()
    assert listed == [shown]


async def test_a_cancel_racing_a_payment_ends_in_exactly_one_terminal_state(
    orders: RunningService, place_order, order_row
) -> None:
    user = make_user()
    placed = [await place_order(user=user) for _ in range(10)]

    async def pay(order_id: str) -> str:
        async with orders.runtime.database.transaction() as uow:
            payment = service.OrderPayment(order_id=uuid.UUID(order_id), payment_id=uuid.uuid4(), stripe_id="ch_race")
            return await service.complete_order(uow=uow, payment=payment)

    async def cancel(order_id: str) -> int:
        return (await orders.client.delete(f"/api/orders/{order_id}", headers=user.headers)).status_code

    async def expire(order_id: str) -> bool:
        async with orders.runtime.database.transaction() as uow:
            return await service.expire_order(uow=uow, order_id=uuid.UUID(order_id))

    results = await asyncio.gather(*(asyncio.gather(cancel(o["id"]), pay(o["id"]), expire(o["id"])) for o in placed))
    async with orders.sessionmaker() as session:
        payloads = (
            await session.execute(select(OutboxEvent.payload).where(OutboxEvent.subject == "order.cancelled"))
        ).scalars()
        cancelled_events = Counter(json.loads(payload)["id"] for payload in payloads)
    for order, (cancel_status, payment, _expired) in zip(placed, results, strict=True):
        row = await order_row(order["id"])
        assert row.version == 1
        if row.status == "complete":
            assert (payment, cancel_status, cancelled_events[order["id"]]) == ("completed", 400, 0)
        else:
            assert (row.status, row.refund_status, payment, cancel_status) == (
                "cancelled",
                "pending",
                "refund_pending",
                204,
            )
            assert cancelled_events[order["id"]] == 1


async def test_a_payment_for_an_unknown_order_is_acked_with_a_warning(
    orders: RunningService, publish, handled, caplog
) -> None:
    payment = PaymentCreated(id=uuid.uuid4(), order_id=uuid.uuid4(), stripe_id="ch_nobody")
    with caplog.at_level(logging.WARNING, logger="ticketing.orders"):
        await publish(payment)
        await eventually(lambda: handled("orders-payment-created", str(payment.event_id)))
    assert f"payment {payment.id} for unknown order {payment.order_id} ignored" in caplog.text
    async with orders.sessionmaker() as session:
        assert (await session.execute(select(DeadLetter))).first() is None


async def test_a_second_payment_for_a_paid_order_is_logged_and_changes_nothing(
    orders: RunningService, place_order, publish, order_row, handled, caplog
) -> None:
    order = await place_order()
    first = PaymentCreated(id=uuid.uuid4(), order_id=uuid.UUID(order["id"]), stripe_id="ch_first")
    second = PaymentCreated(id=uuid.uuid4(), order_id=uuid.UUID(order["id"]), stripe_id="ch_second")
    await publish(first)
    with caplog.at_level(logging.WARNING, logger="ticketing.orders"):
        await publish(second)
        await eventually(lambda: handled("orders-payment-created", str(second.event_id)))
    row = await order_row(order["id"])
    assert (row.status, row.version, row.payment_id, row.stripe_id) == ("complete", 1, first.id, "ch_first")
    assert f"payment {second.id} (stripe ch_second) for order {order['id']}, which already holds" in caplog.text
