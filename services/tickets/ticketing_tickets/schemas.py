"""tickets request and response bodies, and the list's page cursor."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema
from pydantic.alias_generators import to_camel

from ticketing_common.validation import Price, field_error

TITLE_MESSAGE = "Title is required"
TITLE_MAX_LENGTH = 200


def _title(value: Any) -> str:
    # The Node app's single message covers missing, blank, non-string and too long alike.
    if not isinstance(value, str):
        raise field_error("title", TITLE_MESSAGE)
    title = value.strip()
    if not title or len(title) > TITLE_MAX_LENGTH:
        raise field_error("title", TITLE_MESSAGE)
    return title


# The JSON schemas document what the validators enforce, so the OpenAPI spec describes the accepted input.
Title = Annotated[
    str, BeforeValidator(_title), WithJsonSchema({"type": "string", "minLength": 1, "maxLength": TITLE_MAX_LENGTH})
]


class TicketCreate(BaseModel):
    """A new ticket: a title and a price."""

    model_config = ConfigDict(extra="ignore")

    title: Title
    price: Price


class TicketUpdate(TicketCreate):
    """A ticket's new title and price (both required, as in the Node app)."""


class TicketRead(BaseModel):
    """A ticket as clients see it; `orderId` is null unless an order reserves it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)

    id: uuid.UUID
    title: str
    price: Price
    user_id: uuid.UUID
    version: int
    order_id: uuid.UUID | None
