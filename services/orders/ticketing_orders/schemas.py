"""orders request and response bodies, and the opaque list cursor."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ticketing_common.events import OrderStatus, UtcDateTime, WirePrice
from ticketing_common.validation import field_error

TICKET_ID_MISSING = "TicketId must be provided"
TICKET_ID_INVALID = "TicketId must be a valid id"


def _ticket_id(value: Any) -> uuid.UUID:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise field_error("ticket_id", TICKET_ID_MISSING)
    if not isinstance(value, str):
        raise field_error("ticket_id", TICKET_ID_INVALID)
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise field_error("ticket_id", TICKET_ID_INVALID) from None


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
