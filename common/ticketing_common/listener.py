"""The Listener base class: one durable pull consumer per subject, idempotent handling, ordered versions."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

import asyncpg
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError
from sqlalchemy import insert
from sqlalchemy.dialects.postgresql import insert as pg_insert

from ticketing_common import metrics
from ticketing_common.db import DeadLetter, InboxRecord
from ticketing_common.errors import OutageLog, error_chain, outage_cause
from ticketing_common.events import Event, stream_for
from ticketing_common.requestid import accept_request_id, is_sane_id, set_request_id
from ticketing_common.uow import Database, UnitOfWork

if TYPE_CHECKING:
    from ticketing_common.parking import Gap, Parking

logger = logging.getLogger("ticketing.listener")

E = TypeVar("E", bound=Event)

# What a dead letter keeps of each header: enough for an operator, never more than its table and logs can hold.
_HEADER_KEEP = 256


def _kept_headers(msg: Msg) -> dict[str, str]:
    """What a dead letter or a parked event keeps of the message's headers: each cut to _HEADER_KEEP, no NULs."""
    return {
        key[:_HEADER_KEEP].replace("\x00", ""): value[:_HEADER_KEEP].replace("\x00", "")
        for key, value in (msg.headers or {}).items()
    }


def _event_request_id(msg: Msg) -> str | None:
    """The event's X-Request-ID, checked as the HTTP edge checks it: a hostile one is replaced by a new id."""
    raw = msg.headers.get("X-Request-ID") if msg.headers else None
    return accept_request_id(raw) if raw else None


def _raw_msg_id(msg: Msg) -> str | None:
    return msg.headers.get("Nats-Msg-Id") if msg.headers else None


def _log_failure(durable: str, message_id: str, exc: BaseException) -> None:
    """A failed handler's log line: a traceback, except for a lock conflict Postgres resolved by aborting us (a
    deadlock between two consumers' batches locking the same rows in another order), which a retry settles."""
    conflict = next((e for e in error_chain(exc) if isinstance(e, _LOCK_CONFLICTS)), None)
    if conflict is not None:
        logger.warning("%s: %s for %s; retried", durable, type(conflict).__name__, message_id)
    else:
        logger.exception("%s: handler failed for %s", durable, message_id)


_LOCK_CONFLICTS = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


def _msg_id_is_hostile(msg: Msg) -> bool:
    raw = _raw_msg_id(msg)
    return bool(raw) and not is_sane_id(raw or "")


class EventOutOfOrder(Exception):
    """The replica does not hold version v-1 yet: the event is parked until it does (ticketing_common.parking).

    A handler raises it before it changes anything, or the listener's savepoint takes the changes back.
    """


def version_gate(held: int | None, incoming: int) -> bool:
    """The contract's version rule: True to apply, False to ack and ignore, EventOutOfOrder for a gap."""
    if held is None:
        if incoming == 0:
            return True
        raise EventOutOfOrder(f"version {incoming} arrived before version 0")
    if incoming <= held:
        return False
    if incoming == held + 1:
        return True
    raise EventOutOfOrder(f"version {incoming} arrived while holding {held}")


_CLAIM = (
    "INSERT INTO inbox (consumer, message_id) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING RETURNING message_id"
)


def durable_name(service: str, subject: str) -> str:
    """`<service>-<subject with dots as dashes>`, e.g. orders-ticket-created."""
    return f"{service}-{subject.replace('.', '-')}"


@dataclass(frozen=True)
class ListenerWiring:
    """What the lifespan gives every listener, as workers get the Runtime: no module-level registry."""

    service: str
    database: Database
    js: JetStreamContext
    # How long a fetched message stays with a replica that died before acking it; settings may shorten it.
    ack_wait: float | None = None
    # Where the service's out-of-order events wait; one per process, shared by its listeners (the lifespan's).
    parking: Parking | None = None


class Listener(ABC, Generic[E]):
    """Consumes one subject for one service. Subclasses name the event type and implement handle().

    The seed's Listener, on JetStream: the durable queue group is a durable pull consumer that every
    replica binds; manual ack is explicit ack after the handler's transaction commits; ackWait is ack_wait.
    """

    event_type: ClassVar[type[Event]]
    ack_wait: ClassVar[float] = 30.0
    # Deliveries after which a failing handler or an unresolved version gap is dead-lettered. Counted here, not by
    # JetStream (its max_deliver is unlimited): an outage must not use up a message's deliveries.
    max_deliver: ClassVar[int] = 20
    retry_delay: ClassVar[float] = 0.1
    max_retry_delay: ClassVar[float] = 30.0
    # A handler that failed because the database or NATS was unreachable is retried this soon, every time: it
    # comes back within this long of the recovery, not after a delay that grew while the outage lasted.
    outage_retry_delay: ClassVar[float] = 1.0
    # Messages delivered and not yet acked, gaps waiting for their predecessor included: high enough that a burst
    # of out-of-order events cannot fill it and stall the other entities' events behind them.
    max_ack_pending: ClassVar[int] = 20_000
    fetch_batch: ClassVar[int] = 100

    def __init__(self, wiring: ListenerWiring) -> None:
        self.service = wiring.service
        self.effective_ack_wait = wiring.ack_wait if wiring.ack_wait is not None else self.ack_wait
        self.database = wiring.database
        self.js = wiring.js
        self._task: asyncio.Task[None] | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._stopping = False
        self._busy = False
        self.outages = OutageLog(f"retried in {self.outage_retry_delay:g} s")
        if wiring.parking is None:
            from ticketing_common.parking import Parking  # that module imports this one

            self.parking = Parking(wiring.database)
        else:
            self.parking = wiring.parking
        self.parking.register(self)

    @property
    def subject(self) -> str:
        """The subject this listener consumes."""
        return self.event_type.subject

    @property
    def durable(self) -> str:
        """The durable consumer every replica binds."""
        return durable_name(self.service, self.subject)

    @property
    def stream(self) -> str:
        """The stream holding the subject."""
        return stream_for(self.subject)

    @abstractmethod
    async def handle(self, event: E, uow: UnitOfWork) -> None:
        """Apply the event inside the given unit of work; raise EventOutOfOrder to park it until its predecessor."""

    @classmethod
    def consumer_config_for(cls, service: str, ack_wait: float | None = None) -> ConsumerConfig:
        """The durable's config for a service: deliver-all, explicit ack, ack_wait and max_deliver, one subject."""
        durable = durable_name(service, cls.event_type.subject)
        return ConsumerConfig(
            name=durable,
            durable_name=durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait if ack_wait is not None else cls.ack_wait,
            # Unlimited for JetStream: the listener counts deliveries itself (max_deliver), so an outage uses none up.
            max_deliver=-1,
            filter_subject=cls.event_type.subject,
            max_ack_pending=cls.max_ack_pending,
        )

    async def start(self) -> None:
        """Bind the durable the provisioner created, and consume in the background (again, after a stop)."""
        self._stopping = False
        self._sub = await self.js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
        self._task = asyncio.create_task(self._run(self._sub), name=f"listener-{self.durable}")

    async def stop(self) -> None:
        """Finish the message in hand, then stop fetching."""
        self._stopping = True
        task = self._task
        if task is None:
            return
        if not self._busy:
            task.cancel()
        try:
            await asyncio.wait_for(task, timeout=10)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
        with contextlib.suppress(BaseException):
            await task
        if self._sub is not None:
            # Otherwise a pull request cut short by the cancel keeps the connection's drain waiting.
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _run(self, sub: JetStreamContext.PullSubscription) -> None:
        while not self._stopping:
            try:
                messages = await sub.fetch(self.fetch_batch, timeout=1)
            except TimeoutError:
                continue
            except nats.errors.Error as exc:  # closed or reconnecting included: wait and fetch again
                logger.warning("%s: fetch failed: %s", self.durable, exc)
                await asyncio.sleep(0.5)
                continue
            self._busy = True
            try:
                await self.process_batch(messages)
            finally:
                self._busy = False

    @staticmethod
    def message_id(msg: Msg) -> str:
        """The event's Nats-Msg-Id, or its stream position for events published without one.

        A Nats-Msg-Id that the HTTP edge would refuse as a request id (too long for the bus tables, or bytes no
        log should carry) is replaced by `invalid:<its sha256>`, under which the event is dead-lettered.
        """
        raw = _raw_msg_id(msg)
        if raw:
            return raw if is_sane_id(raw) else "invalid:" + hashlib.sha256(raw.encode(errors="replace")).hexdigest()
        meta = msg.metadata
        return f"{meta.stream}:{meta.sequence.stream}"

    def _retry_delay(self, deliveries: int) -> float:
        return float(min(self.retry_delay * 2 ** max(deliveries - 1, 0), self.max_retry_delay))

    async def _claim(self, uow: UnitOfWork, message_ids: list[str]) -> set[str]:
        """Record messages in the inbox; returns the ids not handled before (one round trip for a batch)."""
        conn = await uow.connection()
        rows = await conn.fetch(_CLAIM, self.durable, message_ids)
        return {row[0] for row in rows}

    async def handle_checked(self, uow: UnitOfWork, event: Event) -> None:
        """handle(), refusing a handler that ends the transaction it was given."""
        transaction = uow.session.get_transaction()
        await self.handle(event, uow)  # type: ignore[arg-type]
        if uow.session.get_transaction() is not transaction:
            # A handler that commits or rolls back would let us ack work that is not (all) in the database.
            raise RuntimeError(f"{type(self).__name__}.handle must not end the transaction; raise instead")

    async def process_batch(self, messages: list[Msg]) -> None:
        """Apply a fetched batch in one transaction, then ack it; on any trouble, redo it one message at a time.

        One commit per batch instead of per event is what lets a listener keep up with a busy stream; the
        fallback gives each message its own fate (a version gap waits, a failure retries, a poison pill is
        dead-lettered) without holding back the others.
        """
        if len(messages) == 1:
            await self.process(messages[0])
            return
        batch: list[tuple[Msg, Event, str]] = []
        for msg in messages:
            if _msg_id_is_hostile(msg):
                await self.process(msg)  # dead-letters it
                continue
            try:
                batch.append((msg, self.event_type.model_validate_json(msg.data), self.message_id(msg)))
            except ValidationError:
                await self.process(msg)  # dead-letters it
        outcomes: list[str] = []
        try:
            async with self.database.transaction() as uow:
                fresh = await self._claim(uow, [message_id for _, _, message_id in batch])
                for msg, event, message_id in batch:
                    if message_id not in fresh:
                        outcomes.append("duplicate")
                        continue
                    fresh.discard(message_id)  # the same id twice in one batch is a duplicate too
                    set_request_id(_event_request_id(msg))
                    await self.handle_checked(uow, event)
                    outcomes.append("applied")
        except Exception as exc:
            if await self._outage(exc, [msg for msg, _, _ in batch]):
                return
            await self._process_each(batch)
            return
        for (msg, _, _), outcome in zip(batch, outcomes, strict=True):
            metrics.EVENTS_HANDLED.labels(self.durable, outcome).inc()
            await msg.ack()
        await self.parking.applied(
            event.entity_key() for (_, event, _), outcome in zip(batch, outcomes, strict=True) if outcome == "applied"
        )

    def _gap(self, msg: Msg, message_id: str, event: Event, reason: str) -> Gap:
        from ticketing_common.parking import Gap

        return Gap(
            message_id, event.entity_key(), msg.metadata.sequence.stream, bytes(msg.data), _kept_headers(msg), reason
        )

    async def _process_each(self, batch: list[tuple[Msg, Event, str]]) -> None:
        """Give each message of a failed batch its own fate, in one transaction with a savepoint per message.

        A version gap rolls back to its savepoint and is parked (ticketing_common.parking), acked; a failing handler
        rolls back and waits (nak with a growing delay) until it is dead-lettered; the rest commit together, the
        parked gaps with them. One commit for the batch, not one per message: a burst of a thousand out-of-order
        events costs ten transactions, once, and the other entities' events behind them are not held up by it.
        """
        outcomes: list[tuple[Msg, str, str, str]] = []  # msg, message id, outcome, reason
        gaps: list[Gap] = []
        applied: list[str] = []
        try:
            async with self.database.transaction() as uow:
                conn = await uow.connection()
                for msg, event, message_id in batch:
                    set_request_id(msg.headers.get("X-Request-ID") if msg.headers else None)
                    # A savepoint on the driver connection: a few hundred microseconds where SQLAlchemy's
                    # begin_nested cost ten milliseconds a message here.
                    savepoint = conn.transaction()
                    await savepoint.start()
                    try:
                        outcome = "duplicate"
                        if await self._claim(uow, [message_id]):
                            await self.handle_checked(uow, event)
                            outcome = "applied"
                            applied.append(event.entity_key())
                        await uow.session.flush()  # ORM changes into this savepoint, not a later one
                        await savepoint.commit()
                        outcomes.append((msg, message_id, outcome, ""))
                    except Exception as exc:
                        await savepoint.rollback()
                        uow.session.expunge_all()  # its objects may describe rows the savepoint took back
                        if outage_cause(exc) is not None:
                            raise
                        if isinstance(exc, EventOutOfOrder):
                            gaps.append(self._gap(msg, message_id, event, str(exc)))
                            outcomes.append((msg, message_id, "parked", str(exc)))
                        else:
                            _log_failure(self.durable, message_id, exc)
                            outcomes.append((msg, message_id, "failed", f"handler failed: {exc!r}"))
                await self.parking.park(uow, self.durable, self.subject, gaps)
        except Exception as exc:
            if not await self._outage(exc, [msg for msg, _, _ in batch]):
                for msg, _, _ in batch:  # not an outage, yet the transaction failed: one at a time after all
                    await self.process(msg)
            return
        for msg, message_id, outcome, reason in outcomes:
            if outcome in ("applied", "duplicate", "parked"):
                metrics.EVENTS_HANDLED.labels(self.durable, outcome).inc()
                await msg.ack()
            else:
                await self._retry_or_give_up(msg, message_id, msg.metadata.num_delivered, reason, outcome)
        await self.parking.applied(applied)

    async def _outage(self, exc: BaseException, messages: list[Msg]) -> bool:
        """If exc says the database or NATS is unreachable: retry the messages soon, log once per outage; True."""
        cause = outage_cause(exc)
        if cause is None:
            return False
        self.outages.record(f"consumer {self.durable}", cause, exc)
        for msg in messages:
            metrics.EVENTS_HANDLED.labels(self.durable, "outage").inc()
            with contextlib.suppress(nats.errors.Error):
                await msg.nak(delay=self.outage_retry_delay)
        return True

    async def process(self, msg: Msg) -> None:
        """Handle one message: parse, apply once inside a transaction with its inbox record, then ack."""
        set_request_id(_event_request_id(msg))
        message_id = self.message_id(msg)
        deliveries = msg.metadata.num_delivered
        if _msg_id_is_hostile(msg):
            # Without a usable id the event cannot be deduplicated, so it is never applied; it is kept for an operator.
            await self._give_up(
                msg, message_id, deliveries, "invalid Nats-Msg-Id header: too long or unsafe characters"
            )
            return
        try:
            event = self.event_type.model_validate_json(msg.data)
        except ValidationError as exc:
            await self._give_up(msg, message_id, deliveries, f"invalid payload: {exc.errors(include_url=False)}")
            return
        try:
            async with self.database.transaction() as uow:
                outcome = "duplicate"
                if await self._claim(uow, [message_id]):
                    await self.handle_checked(uow, event)
                    outcome = "applied"
        except EventOutOfOrder as exc:
            await self._park(msg, message_id, event, str(exc))
            return
        except Exception as exc:
            if await self._outage(exc, [msg]):
                return
            _log_failure(self.durable, message_id, exc)
            await self._retry_or_give_up(msg, message_id, deliveries, f"handler failed: {exc!r}", "failed")
            return
        metrics.EVENTS_HANDLED.labels(self.durable, outcome).inc()
        await msg.ack()
        if outcome == "applied":
            await self.parking.applied([event.entity_key()])

    async def _park(self, msg: Msg, message_id: str, event: Event, reason: str) -> None:
        """Park one out-of-order event in a transaction of its own, then ack it."""
        try:
            async with self.database.transaction() as uow:
                await self.parking.park(uow, self.durable, self.subject, [self._gap(msg, message_id, event, reason)])
        except Exception as exc:
            if not await self._outage(exc, [msg]):
                logger.exception("%s: could not park %s; retrying later", self.durable, message_id)
                with contextlib.suppress(nats.errors.Error):
                    await msg.nak(delay=self._retry_delay(msg.metadata.num_delivered))
            return
        metrics.EVENTS_HANDLED.labels(self.durable, "parked").inc()
        await msg.ack()

    async def _retry_or_give_up(self, msg: Msg, message_id: str, deliveries: int, reason: str, outcome: str) -> None:
        if deliveries >= self.max_deliver:
            await self._give_up(msg, message_id, deliveries, f"{reason} (after {deliveries} deliveries)")
            return
        metrics.EVENTS_HANDLED.labels(self.durable, outcome).inc()
        with contextlib.suppress(nats.errors.Error):
            await msg.nak(delay=self._retry_delay(deliveries))

    async def _give_up(self, msg: Msg, message_id: str, deliveries: int, reason: str) -> None:
        """Record a dead letter (and announce it on deadletter.<durable>), then stop redelivery."""
        logger.error("%s: dead-lettering %s: %s", self.durable, message_id, reason)
        record = DeadLetterRecord(
            consumer=self.durable,
            subject=msg.subject,
            message_id=message_id,
            stream_sequence=msg.metadata.sequence.stream,
            deliveries=deliveries,
            reason=reason,
            payload=bytes(msg.data),
            headers=_kept_headers(msg),
        )
        try:
            async with self.database.transaction() as uow:
                await record_dead_letter(uow, record)
        except Exception:
            # Nothing is lost: without a dead-letter row the message stays with JetStream for another try.
            logger.exception("%s: could not record dead letter %s; retrying later", self.durable, message_id)
            with contextlib.suppress(nats.errors.Error):
                await msg.nak(delay=self.max_retry_delay)
            return
        metrics.EVENTS_HANDLED.labels(self.durable, "dead_lettered").inc()
        with contextlib.suppress(nats.errors.Error):
            await msg.term()


@dataclass(frozen=True)
class DeadLetterRecord:
    """What a dead letter keeps of an event a consumer gave up on: the dead_letters columns it fills."""

    consumer: str
    subject: str
    message_id: str
    stream_sequence: int | None
    deliveries: int
    reason: str
    payload: bytes
    headers: dict[str, str]


async def record_dead_letter(uow: UnitOfWork, record: DeadLetterRecord) -> None:
    """In the caller's transaction: the dead-letter row, the inbox record that ends its redelivery, and the notice
    on deadletter.<consumer> (through the outbox)."""
    session = uow.session
    await session.execute(insert(DeadLetter).values(**dataclasses.asdict(record)))  # its fields are the columns
    await session.execute(
        pg_insert(InboxRecord).values(consumer=record.consumer, message_id=record.message_id).on_conflict_do_nothing()
    )
    notice = {
        "consumer": record.consumer,
        "subject": record.subject,
        "messageId": record.message_id,
        "streamSequence": record.stream_sequence,
        "deliveries": record.deliveries,
        "reason": record.reason[:2000],
    }
    raw_request_id = record.headers.get("X-Request-ID")
    uow.enqueue_message(
        f"deadletter.{record.consumer}",
        json.dumps(notice).encode(),
        message_id=uuid.uuid4(),
        request_id=accept_request_id(raw_request_id) if raw_request_id else None,
    )
