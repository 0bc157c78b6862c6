"""auth request and response bodies."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from ticketing_common.validation import field_error

PASSWORD_MESSAGE = "Password must be between 8 and 128 characters"


def _email(value: Any) -> str:
    if not isinstance(value, str):
        raise field_error("email", "Email must be valid")
    try:
        checked = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError:
        raise field_error("email", "Email must be valid") from None
    return checked.normalized.lower()


def _new_password(value: Any) -> str:
    if not isinstance(value, str) or not 8 <= len(value) <= 128:
        raise field_error("password", PASSWORD_MESSAGE)
    return value


def _any_password(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise field_error("password", "You must supply a password")
    if len(value) > 128:
        raise field_error("password", PASSWORD_MESSAGE)
    return value


# The JSON schemas document what the validators enforce, so the OpenAPI spec describes the accepted input.
Email = Annotated[str, BeforeValidator(_email), WithJsonSchema({"type": "string", "format": "email"})]


class UserCreate(BaseModel):
    """Sign-up: a valid email and a password of 8 to 128 characters."""

    model_config = ConfigDict(extra="ignore")

    email: Email
    password: Annotated[
        str, BeforeValidator(_new_password), WithJsonSchema({"type": "string", "minLength": 8, "maxLength": 128})
    ]


class UserSignin(BaseModel):
    """Sign-in credentials."""

    model_config = ConfigDict(extra="ignore")

    email: Email
    password: Annotated[
        str, BeforeValidator(_any_password), WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 128})
    ]


class UserRead(BaseModel):
    """A user as clients see it: never the password or its hash."""

    id: uuid.UUID
    email: str


class SessionUser(BaseModel):
    """The signed-in user as the token says."""

    id: uuid.UUID
    email: str
    iat: int


class CurrentUserRead(BaseModel):
    """`{"currentUser": ...}`, null when signed out."""

    model_config = ConfigDict(populate_by_name=True)

    current_user: SessionUser | None = Field(alias="currentUser")
