"""orders request and response bodies, and the opaque list cursor."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ticketing_common.errors import BadRequest
from ticketing_common.events import OrderStatus, UtcDateTime, WirePrice
from ticketing_common.validation import field_error

TICKET_ID_MISSING = "TicketId must be provided"
TICKET_ID_INVALID = "TicketId must be a valid id"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 100


def _ticket_id(value: Any) -> uuid.UUID:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise field_error("ticket_id", TICKET_ID_MISSING)
    if not isinstance(value, str):
        raise field_error("ticket_id", TICKET_ID_INVALID)
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise field_error("ticket_id", TICKET_ID_INVALID) from None


def page_size(value: Any) -> int:
    """A ?limit= value, or an error naming the allowed range (rather than a generic "Limit is invalid")."""
    try:
        size = int(value) if isinstance(value, str) and value.strip().lstrip("-").isdigit() else None
    except ValueError:
        size = None
    if size is None or not 1 <= size <= MAX_PAGE_SIZE:
        raise field_error("limit", f"Limit must be between 1 and {MAX_PAGE_SIZE}")
    return size


class OrderCreate(BaseModel):
    """Reserve a ticket: `{ticketId}`."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    ticket_id: Annotated[uuid.UUID, BeforeValidator(_ticket_id)] = Field(alias="ticketId")


class ReadModel(BaseModel):
    """camelCase out, built from service results."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class OrderTicketRead(ReadModel):
    """The reserved ticket as the order shows it."""

    id: uuid.UUID
    title: str
    price: WirePrice
    version: int


class RefundRead(ReadModel):
    """A payment that met a cancelled order and must be refunded."""

    status: str
    payment_id: uuid.UUID | None


class OrderRead(ReadModel):
    """An order with its ticket; `refund` appears only when a late payment has to be refunded."""

    id: uuid.UUID
    user_id: uuid.UUID
    status: OrderStatus
    expires_at: UtcDateTime
    version: int
    ticket: OrderTicketRead
    refund: RefundRead | None = None


class InvalidCursor(BadRequest):
    """A ?cursor= that this service did not issue."""

    def __init__(self) -> None:
        super().__init__("Cursor is invalid", field="cursor")


def encode_cursor(created_at: datetime, order_id: uuid.UUID) -> str:
    """The opaque cursor after an item: urlsafe base64 (unpadded) of `<created_at iso>|<id>`."""
    raw = f"{created_at.isoformat()}|{order_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) position a cursor names, or InvalidCursor; padded or unpadded input is accepted."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, ident = raw.partition("|")
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None:
            raise ValueError("cursor time without a zone")
        return created_at, uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor() from None
