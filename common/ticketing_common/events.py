"""The contract's event catalog: typed, frozen payloads, camelCase on the wire, one subject each."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic.alias_generators import to_camel


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso_z(value: datetime) -> str:
    """ISO-8601 in UTC ending in Z, millisecond precision, as the contract writes times."""
    return _utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Prices are exact decimals in the services and plain JSON numbers on the wire.
WirePrice = Annotated[Decimal, PlainSerializer(lambda v: float(v), return_type=float, when_used="json")]
UtcDateTime = Annotated[
    datetime,
    AfterValidator(_utc),
    PlainSerializer(iso_z, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]


class OrderStatus(StrEnum):
    """The order lifecycle: created, then complete (paid) or cancelled."""

    CREATED = "created"
    CANCELLED = "cancelled"
    AWAITING_PAYMENT = "awaiting:payment"
    COMPLETE = "complete"


class CamelModel(BaseModel):
    """camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="ignore",
        field_title_generator=lambda name, _info: to_camel(name),  # the schemas' titles are the wire names
    )


class Event(CamelModel):
    """A fact that happened. The body on the wire is exactly the payload; the id travels as Nats-Msg-Id."""

    subject: ClassVar[str]
    # Who may publish it, and which services consume it (each with its durable `<service>-<subject>`): the catalog
    # (docs/asyncapi.yaml) is generated from these, and a test holds every service's listeners to them.
    publisher: ClassVar[str]
    consumers: ClassVar[tuple[str, ...]]
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, exclude=True)

    def to_bytes(self) -> bytes:
        """The payload JSON, with no envelope."""
        return self.model_dump_json(by_alias=True).encode()

    def entity_key(self) -> str:
        """The entity whose versions order this event: one that arrives too early waits for this entity's next."""
        return str(getattr(self, "id"))  # noqa: B009  every versioned event carries its entity's id


class TicketCreated(Event):
    """A ticket was listed for sale."""

    subject: ClassVar[str] = "ticket.created"
    publisher: ClassVar[str] = "tickets"
    consumers: ClassVar[tuple[str, ...]] = ("orders",)
    id: uuid.UUID
    version: int
    title: str
    price: WirePrice
    user_id: uuid.UUID


class TicketUpdated(Event):
    """A ticket changed: title, price, or its reservation."""

    subject: ClassVar[str] = "ticket.updated"
    publisher: ClassVar[str] = "tickets"
    consumers: ClassVar[tuple[str, ...]] = ("orders",)
    id: uuid.UUID
    version: int
    title: str
    price: WirePrice
    user_id: uuid.UUID
    order_id: uuid.UUID | None


class OrderTicket(CamelModel):
    """The ticket an order reserves, as order.created carries it."""

    id: uuid.UUID
    price: WirePrice


class OrderCreated(Event):
    """An order reserved a ticket until expiresAt."""

    subject: ClassVar[str] = "order.created"
    publisher: ClassVar[str] = "orders"
    consumers: ClassVar[tuple[str, ...]] = ("tickets", "payments", "expiration")
    id: uuid.UUID
    version: int
    status: OrderStatus
    user_id: uuid.UUID
    expires_at: UtcDateTime
    ticket: OrderTicket


class TicketRef(CamelModel):
    """Just a ticket's id."""

    id: uuid.UUID


class OrderCancelled(Event):
    """An order was cancelled, by its owner or by expiration; its ticket is free again."""

    subject: ClassVar[str] = "order.cancelled"
    publisher: ClassVar[str] = "orders"
    consumers: ClassVar[tuple[str, ...]] = ("tickets", "payments", "expiration")
    id: uuid.UUID
    version: int
    ticket: TicketRef


class ExpirationComplete(Event):
    """An order's reservation window ended."""

    subject: ClassVar[str] = "expiration.complete"
    publisher: ClassVar[str] = "expiration"
    consumers: ClassVar[tuple[str, ...]] = ("orders",)
    order_id: uuid.UUID

    def entity_key(self) -> str:
        """Its order: it is about that order's state."""
        return str(self.order_id)


class PaymentCreated(Event):
    """An order was charged."""

    subject: ClassVar[str] = "payment.created"
    publisher: ClassVar[str] = "payments"
    consumers: ClassVar[tuple[str, ...]] = ("orders",)
    id: uuid.UUID
    order_id: uuid.UUID
    stripe_id: str

    def entity_key(self) -> str:
        """Its order (the payment's own id names no entity a replica holds)."""
        return str(self.order_id)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.subject: cls
    for cls in (TicketCreated, TicketUpdated, OrderCreated, OrderCancelled, ExpirationComplete, PaymentCreated)
}

# One stream per domain; a subject belongs to exactly one stream.
STREAMS: dict[str, list[str]] = {
    "TICKETS": ["ticket.>"],
    "ORDERS": ["order.>"],
    "EXPIRATION": ["expiration.>"],
    "PAYMENTS": ["payment.>"],
    "DEADLETTERS": ["deadletter.>"],
}


def stream_for(subject: str) -> str:
    """The stream that holds a subject."""
    prefix = subject.split(".", 1)[0]
    for name, subjects in STREAMS.items():
        if any(s.split(".", 1)[0] == prefix for s in subjects):
            return name
    raise KeyError(f"no stream holds {subject}")
