"""The contract's error shape, the errors services raise, and the handlers that render them."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import asyncpg
import nats.errors
import nats.js.errors
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ticketing_common.ids import minted_within
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
    503: "The service cannot answer now (a dependency is down, or the entity is not yet known); see Retry-After",
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


class ReplicaNotFound(NotFound):
    """An entity this service knows only from its replica (an order in payments, a ticket in orders) is not there.

    404 only while the consumer that brings such entities has caught up; while it is behind (messages not yet
    delivered or not yet acked), the entity may exist and arrive in a moment, so the answer is NotYetKnown (503,
    Retry-After: 1) instead. So is a miss for a UUIDv7 id minted moments ago (ids.py): its producer has committed
    it, and its event may still wait in the producer's outbox, where no consumer can see it. Subclasses name the
    consumer: its stream and durable.
    """

    replica_stream: ClassVar[str]
    replica_durable: ClassVar[str]

    def __init__(self, entity_id: uuid.UUID | None = None, message: str | None = None) -> None:
        super().__init__(message)
        self.entity_id = entity_id


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


class ServiceUnavailable(AppError):
    """The service cannot answer now, but may in a moment (503 with Retry-After)."""

    status_code = 503
    message = "Service unavailable, retry shortly"
    retry_after = 2

    def __init__(self, message: str | None = None, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        if retry_after is not None:
            self.retry_after = retry_after


class NotYetKnown(ServiceUnavailable):
    """The entity is not in this service's replica, and the consumer that would bring it is behind (503).

    A 404 would be a lie: the entity may exist and arrive within a moment. 404 is kept for a caught-up replica.
    """

    message = "Not yet known; retry shortly"
    retry_after = 1


# What a dependency outage raises, by type: a database down, restarting or cut off, a pool that timed out, NATS away.
# Matched anywhere in an error's cause/context chain (SQLAlchemy wraps the driver's errors).
_OUTAGE_TYPES: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # 08xxx: the connection failed or does not exist
    asyncpg.CannotConnectNowError,  # 57P03: the database system is starting up / shutting down
    asyncpg.AdminShutdownError,  # 57P01: terminating connection due to administrator command
    asyncpg.CrashShutdownError,  # 57P02: terminating because of the crash of another server process
    asyncpg.ConnectionDoesNotExistError,  # connection was closed in the middle of operation
    asyncpg.InternalClientError,  # a session the server ended under a transaction (see uow.UnitOfWork.rollback)
    sqlalchemy.exc.TimeoutError,  # QueuePool limit: every connection busy for pool_timeout
    ConnectionError,  # refused / reset (OSError subclasses), on connect or mid-statement
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.TimeoutError,
    nats.js.errors.ServiceUnavailableError,
)


_OUTAGE_FAMILIES: tuple[type[Exception], ...] = (
    sqlalchemy.exc.SQLAlchemyError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    nats.errors.Error,
)


def error_chain(exc: BaseException) -> Iterator[BaseException]:
    """exc, then its causes and contexts (SQLAlchemy wraps the adapter's error, which wraps the driver's)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_outage(error: BaseException) -> bool:
    if isinstance(error, _OUTAGE_TYPES):
        return True
    if isinstance(error, asyncpg.InterfaceError):
        return "connection is closed" in str(error)
    return isinstance(error, sqlalchemy.exc.DBAPIError) and bool(error.connection_invalidated)


def outage_cause(exc: BaseException) -> BaseException | None:
    """The error in exc's chain that says a dependency is unreachable, or None for any other error."""
    return next((error for error in error_chain(exc) if _is_outage(error)), None)


class OutageLog:
    """One log line per outage error; the first of an outage with its traceback, the rest with a running count.

    An outage is a run of such errors with no quiet gap longer than `quiet_seconds`; a new one logs a traceback again.
    A thousand requests failing on one restarting database are one story, not a thousand tracebacks.
    """

    def __init__(self, outcome: str = "answered 503", quiet_seconds: float = 30.0) -> None:
        self.outcome = outcome
        self.quiet_seconds = quiet_seconds
        self.count = 0
        self._last = float("-inf")

    @property
    def last(self) -> float:
        """When (time.monotonic) the last outage error was recorded; -inf if never."""
        return self._last

    def record(self, what: str, cause: BaseException, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last > self.quiet_seconds:
            self.count = 0
        self._last = now
        self.count += 1
        reason = f"{type(cause).__name__}: {str(cause)[:200]}"
        if self.count == 1:
            logger.warning("outage: %s %s (%s)", what, self.outcome, reason, exc_info=exc)
        else:
            logger.warning("outage: %s %s (%s); %d errors in this outage", what, self.outcome, reason, self.count)


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


# After an outage (NATS or the database away), producers' relays still have to publish what they committed meanwhile,
# and may do so late (their NOTIFY listener reconnects, their poll runs each second); for this long after this process
# met an outage or saw NATS reconnect, a replica miss is "not yet known" whatever its consumer says.
RECOVERY_GRACE_SECONDS = 10.0


async def consumers_behind(request: Request, consumers: Sequence[tuple[str, str]], *, wait: float = 0.0) -> bool:
    """Whether any of this service's consumers (stream, durable) may still bring something: it has messages to
    deliver or ack (one NATS request each, concurrently), JetStream cannot be asked, or an outage ended moments ago.

    With `wait`, a consumer that is behind is given up to that long to catch up with what was on its stream when
    asked: every message it had delivered by then acked (its ack floor reached that point), and nothing undelivered.
    Events published meanwhile do not count, so a busy stream does not keep the answer "behind" for ever.
    """
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        return False
    state = request.app.state
    reconnects = runtime.bus.nc.stats.get("reconnects", 0)
    if reconnects != getattr(state, "seen_reconnects", 0):
        state.seen_reconnects, state.reconnect_seen_at = reconnects, time.monotonic()
    logs = [getattr(state, "outage_log", None), *(getattr(li, "outages", None) for li in runtime.listeners)]
    last_outage = max((log.last for log in logs if isinstance(log, OutageLog)), default=float("-inf"))
    last_trouble = max(getattr(state, "reconnect_seen_at", float("-inf")), last_outage)
    if time.monotonic() - last_trouble < RECOVERY_GRACE_SECONDS:
        return True
    deadline = time.monotonic() + wait
    needed: list[int | None] = [None] * len(consumers)  # per consumer: the stream position it must have acked
    pause = 0.005
    while True:
        try:
            infos = await asyncio.wait_for(
                asyncio.gather(*(runtime.bus.js.consumer_info(stream, durable) for stream, durable in consumers)), 1
            )
        except Exception as error:  # NATS away or slow: whether it is behind cannot be told, so assume it is
            durables = ", ".join(durable for _, durable in consumers)
            logger.warning("consumers %s: lag unknown (%s); answering as if behind", durables, error)
            return True
        behind = False
        for i, info in enumerate(infos):
            if info.num_pending:  # not all delivered yet: what it delivers next was on the stream when asked
                needed[i] = None
                behind = True
                continue
            if needed[i] is None:
                needed[i] = info.delivered.stream_seq if info.delivered is not None else 0
            acked = info.ack_floor.stream_seq if info.ack_floor is not None else 0
            if info.num_ack_pending and (acked or 0) < (needed[i] or 0):
                behind = True
        left = deadline - time.monotonic()
        if not behind or left <= 0:
            return behind
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, 0.05)


async def _replica_behind(request: Request, exc: ReplicaNotFound) -> bool:
    """Whether the replica may still receive the entity, asked on a miss only: its id was minted moments ago (its
    event may still be in the producer's outbox), or its consumer may still bring it (see consumers_behind)."""
    settings = getattr(request.app.state, "settings", None)
    fresh_for = getattr(settings, "not_yet_known_seconds", 0.0)
    if exc.entity_id is not None and minted_within(exc.entity_id, fresh_for, time.time()):
        return True
    return await consumers_behind(request, [(exc.replica_stream, exc.replica_durable)])


def install_error_handlers(app: FastAPI, missing_messages: Mapping[str, str] | None = None) -> None:
    """Render every error of the app in the contract's shape; missing_messages names per-field texts."""

    outages = OutageLog()
    app.state.outage_log = outages

    async def on_app_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AppError)
        if isinstance(exc, ReplicaNotFound) and await _replica_behind(request, exc):
            exc = NotYetKnown()
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
        cause = outage_cause(exc)
        if cause is not None:
            outages.record(f"{request.method} {request.url.path}", cause, exc)
            unavailable = ServiceUnavailable()
            response = JSONResponse(
                unavailable.body(), status_code=503, headers={"Retry-After": str(unavailable.retry_after)}
            )
            return _with_request_id(request, response)
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _with_request_id(request, JSONResponse(error_body("Something went wrong"), status_code=500))

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    # The families outages come from, by type: handled inside the app, so the server does not log each one again
    # with its traceback (the catch-all below runs in Starlette's outermost middleware, which re-raises).
    for family in _OUTAGE_FAMILIES:
        app.add_exception_handler(family, on_unknown_error)
    app.add_exception_handler(Exception, on_unknown_error)
