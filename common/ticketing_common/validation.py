"""Input validation that speaks the contract: custom messages, and the wire rules for ids and prices."""

from __future__ import annotations

import math
import uuid
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

from ticketing_common.errors import NotFound

MAX_PRICE = Decimal("1000000")
PRICE_MESSAGE = "Price must be greater than 0"


def field_error(code: str, message: str) -> PydanticCustomError:
    """An error whose message reaches the client as written."""
    return PydanticCustomError(f"ticketing.{code}", message)


def _price(value: Any) -> Decimal:
    # Booleans are ints in Python and strings are not numbers on our wire: both are refused.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise field_error("price", PRICE_MESSAGE)
    if isinstance(value, float) and not math.isfinite(value):
        raise field_error("price", PRICE_MESSAGE)
    try:
        price = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise field_error("price", PRICE_MESSAGE) from None
    if not price.is_finite() or price <= 0:
        raise field_error("price", PRICE_MESSAGE)
    if price > MAX_PRICE:
        raise field_error("price", "Price must be at most 1,000,000")
    if price != price.quantize(Decimal("0.01")):
        raise field_error("price", "Price must have at most 2 decimals")
    return price.quantize(Decimal("0.01"))


# A price in a request or response body: a JSON number, exact in Python.
Price = Annotated[
    Decimal,
    BeforeValidator(_price),
    PlainSerializer(lambda v: float(v), return_type=float, when_used="json"),
    # What the wire takes: a number in (0, 1,000,000] (not "number or string", as Decimal alone would document).
    WithJsonSchema({"type": "number", "exclusiveMinimum": 0, "maximum": int(MAX_PRICE)}),
]


def parse_id(value: str) -> uuid.UUID:
    """A path id; a malformed one is simply not found."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound() from None
