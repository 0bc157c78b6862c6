"""The contract's error shape, the errors services raise, and the handlers that render them."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ticketing_common.requestid import REQUEST_ID_HEADER, current_request_id

logger = logging.getLogger("ticketing.errors")


class ErrorEntry(BaseModel):
    """One error: its message, and the camelCase field to blame when there is one."""

    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """The contract's error body: `{"errors": [{"message", "field"?}]}` (documentation only; see error_body)."""

    errors: list[ErrorEntry]


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid input (one entry per bad field) or a broken business rule",
    401: "Not authorized: no valid session, or the resource belongs to someone else",
    402: "The payment provider declined the payment",
    404: "Not Found",
    409: "A concurrent change won, or a limit is reached; retrying later may succeed",
    429: "Too many attempts; Retry-After says when to try again",
    500: "Something went wrong",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a route's error statuses, each with the contract's error body."""
    return {status: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[status]} for status in statuses}


def error_body(message: str, field: str | None = None) -> dict[str, list[dict[str, str]]]:
    """The contract's body for a single error."""
    entry = {"message": message}
    if field is not None:
        entry["field"] = field
    return {"errors": [entry]}


class AppError(Exception):
    """An error the client caused or may retry; rendered in the contract's shape."""

    status_code = 400
    message = "Bad request"

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        self.message = message or self.message
        self.field = field
        super().__init__(self.message)

    def body(self) -> dict[str, list[dict[str, str]]]:
        return error_body(self.message, self.field)


class BadRequest(AppError):
    """Invalid input or a broken business rule (400)."""


class NotAuthorized(AppError):
    """No valid session, or someone else's resource (401)."""

    status_code = 401
    message = "Not authorized"


class NotFound(AppError):
    """Unknown route or resource (404)."""

    status_code = 404
    message = "Not Found"


class Conflict(AppError):
    """A concurrent change won; retrying may succeed (409)."""

    status_code = 409
    message = "The resource was changed concurrently; retry"


class TooManyRequests(AppError):
    """Too many attempts (429); Retry-After says in how many whole seconds to try again."""

    status_code = 429
    message = "Too many attempts; try again later"

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class PaymentDeclined(AppError):
    """The payment provider declined the charge (402)."""

    status_code = 402
    message = "Payment declined"


_BUILTIN_MESSAGES = {
    "json_invalid": "Request body must be valid JSON",
    "model_attributes_type": "Request body must be a JSON object",
    "dict_type": "Request body must be a JSON object",
}


def _label(field: str) -> str:
    return field[:1].upper() + field[1:]


def validation_errors(errors: list[Any], missing_messages: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """Turn pydantic errors into the contract's entries: one per bad field, named in camelCase."""
    missing_messages = missing_messages or {}
    entries: list[dict[str, str]] = []
    seen: set[str | None] = set()
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        field = loc[1] if len(loc) > 1 and loc[0] in {"body", "query", "path", "header", "cookie"} else None
        if field is not None and field.isdigit():
            field = None
        kind = error.get("type", "")
        if kind in _BUILTIN_MESSAGES:
            field, message = None, _BUILTIN_MESSAGES[kind]
        elif kind == "missing":
            message = missing_messages.get(field or "", f"{_label(field)} is required" if field else "")
            message = message or "Request body is required"
        elif kind == "value_error":
            message = str(error.get("msg", "")).removeprefix("Value error, ")
        elif kind.startswith("ticketing."):
            message = str(error.get("msg", ""))
        else:
            message = f"{_label(field)} is invalid" if field else "Request is invalid"
        if field in seen:
            continue
        seen.add(field)
        entry = {"message": message}
        if field is not None:
            entry["field"] = field
        entries.append(entry)
    return entries


def _with_request_id(request: Request, response: JSONResponse) -> JSONResponse:
    request_id = current_request_id() or request.scope.get("state", {}).get("request_id")
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def install_error_handlers(app: FastAPI, missing_messages: Mapping[str, str] | None = None) -> None:
    """Render every error of the app in the contract's shape; missing_messages names per-field texts."""

    async def on_app_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AppError)
        # An error that names a wait (a 429, a 503) says it in Retry-After, in whole seconds.
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"errors": validation_errors(list(exc.errors()), missing_messages)}, status_code=400)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = "Not Found" if exc.status_code == 404 else str(exc.detail)
        field = getattr(exc, "field", None)  # routing.UnstorableText names the field it found
        return JSONResponse(error_body(message, field), status_code=exc.status_code, headers=exc.headers)

    async def on_unknown_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _with_request_id(request, JSONResponse(error_body("Something went wrong"), status_code=500))

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unknown_error)
