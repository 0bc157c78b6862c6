"""tickets request and response bodies, and the list's page cursor."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema
from pydantic.alias_generators import to_camel

from ticketing_common.errors import BadRequest
from ticketing_common.validation import Price, field_error

TITLE_MESSAGE = "Title is required"
TITLE_MAX_LENGTH = 200
DEFAULT_LIMIT = 100
MAX_LIMIT = 100
LIMIT_MESSAGE = f"Limit must be between 1 and {MAX_LIMIT}"


def _title(value: Any) -> str:
    # The Node app's single message covers missing, blank, non-string and too long alike.
    if not isinstance(value, str):
        raise field_error("title", TITLE_MESSAGE)
    title = value.strip()
    if not title or len(title) > TITLE_MAX_LENGTH:
        raise field_error("title", TITLE_MESSAGE)
    return title


def _limit(value: Any) -> int:
    # Query values arrive as strings; "1.0", "abc" and "" are all refused with the same message.
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise field_error("limit", LIMIT_MESSAGE)
    return value


# The JSON schemas document what the validators enforce, so the OpenAPI spec describes the accepted input.
Title = Annotated[
    str, BeforeValidator(_title), WithJsonSchema({"type": "string", "minLength": 1, "maxLength": TITLE_MAX_LENGTH})
]
Limit = Annotated[int, BeforeValidator(_limit), WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT})]


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


class InvalidCursor(BadRequest):
    """A `cursor` that this service did not hand out."""

    def __init__(self) -> None:
        super().__init__("Cursor is invalid", field="cursor")


@dataclass(frozen=True)
class PageCursor:
    """Where a page of the list ends: the (created_at, id) of its last ticket, opaque to clients."""

    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        """URL-safe base64 of `<created_at ISO>|<id>`, without padding."""
        raw = f"{self.created_at.isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> PageCursor:
        """Parse a cursor; anything malformed is InvalidCursor (400, field cursor)."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            created, _, ident = raw.partition("|")
            created_at = datetime.fromisoformat(created)
            cursor = cls(created_at, uuid.UUID(ident))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidCursor() from None
        if created_at.tzinfo is None:
            raise InvalidCursor()
        return cursor
