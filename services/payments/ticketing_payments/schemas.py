"""payments request and response bodies."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from ticketing_common.validation import field_error

TOKEN_MISSING = "Token must be provided"
ORDER_ID_MISSING = "OrderId must be provided"
ORDER_ID_INVALID = "OrderId must be a valid id"


def _token(value: Any) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise field_error("token", TOKEN_MISSING)
    if not isinstance(value, str) or len(value) > 255:
        raise field_error("token", "Token must be a string of at most 255 characters")
    return value.strip()


def _order_id(value: Any) -> uuid.UUID:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise field_error("order_id", ORDER_ID_MISSING)
    if not isinstance(value, str):
        raise field_error("order_id", ORDER_ID_INVALID)
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise field_error("order_id", ORDER_ID_INVALID) from None


class PaymentCreate(BaseModel):
    """Pay for an order: `{token, orderId}` (a Stripe card token such as tok_visa, or a pm_ PaymentMethod)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    # The schema documents what _token enforces, so the OpenAPI spec describes the accepted input.
    token: Annotated[str, BeforeValidator(_token), WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 255})]
    order_id: Annotated[uuid.UUID, BeforeValidator(_order_id)] = Field(alias="orderId")


class PaymentRead(BaseModel):
    """The payment just made: `{id}`."""

    id: uuid.UUID
