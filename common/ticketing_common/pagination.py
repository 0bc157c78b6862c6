"""Keyset pagination for every list: `?limit=`, an opaque `?cursor=`, and the next page in the response headers."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Query, Request
from pydantic import BeforeValidator, WithJsonSchema

from ticketing_common.errors import BadRequest
from ticketing_common.validation import field_error

DEFAULT_LIMIT = 100
MAX_LIMIT = 100
LIMIT_MESSAGE = f"Limit must be between 1 and {MAX_LIMIT}"
NEXT_CURSOR_HEADER = "X-Next-Cursor"


def _limit(value: Any) -> int:
    # Query values arrive as strings; "1.0", "abc", "" and "²" (a digit to str.isdigit, not to int) are all refused
    # with the same message.
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise field_error("limit", LIMIT_MESSAGE)
    return value


# The JSON schema documents what the validator enforces, so the OpenAPI spec describes the accepted input.
Limit = Annotated[
    int,
    BeforeValidator(_limit),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
    Query(description=f"Page size, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})"),
]
Cursor = Annotated[str | None, Query(description="The X-Next-Cursor of the previous page")]


class InvalidCursor(BadRequest):
    """A `cursor` that this service did not hand out."""

    def __init__(self) -> None:
        super().__init__("Cursor is invalid", field="cursor")


@dataclass(frozen=True)
class PageCursor:
    """Where a page ends: the (created_at, id) of its last item, opaque to clients."""

    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        """URL-safe base64 of `<created_at ISO>|<id>`, without padding."""
        raw = f"{self.created_at.isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> PageCursor:
        """Parse a cursor (padded or not); anything malformed is InvalidCursor (400, field cursor)."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            created, _, ident = raw.partition("|")
            created_at = datetime.fromisoformat(created)
            cursor = cls(created_at, uuid.UUID(ident))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidCursor() from None
        if created_at.tzinfo is None:
            raise InvalidCursor()
        try:
            # Postgres compares in UTC: 0001-01-01T00:00:00+01:00 is a valid ISO date that has no UTC instant.
            created_at.astimezone(UTC)
        except OverflowError:
            raise InvalidCursor() from None
        return cursor

    @classmethod
    def parse(cls, value: str | None) -> PageCursor | None:
        """The position after which a page starts; None for the first page."""
        return cls.decode(value) if value is not None else None


def next_page_headers(request: Request, limit: int, cursor: PageCursor | None) -> dict[str, str]:
    """`Link: <…>; rel="next"` and `X-Next-Cursor` when there is a next page; nothing on the last one."""
    if cursor is None:
        return {}
    token = cursor.encode()
    query = urlencode({"limit": limit, "cursor": token})
    return {"Link": f'<{request.url.path}?{query}>; rel="next"', NEXT_CURSOR_HEADER: token}
