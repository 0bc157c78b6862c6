"""The route class every service router uses: request bodies parsed as the wire means them, and checked for text
that no database could store.

FastAPI parses a JSON body with `json.loads`, which turns `1000000.0000000000000001` into the float 1000000.0 before
any validator sees it, takes `NaN`, and lets a NUL byte or a lone surrogate (`"\\ud800"`) through to Postgres, which
refuses it with an error that became a 500. Here numbers with a fraction are exact Decimals (and NaN or Infinity
Decimals that no validator takes), and text that is not storable Unicode is a 400 naming the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

# NUL, which Postgres text cannot hold, and UTF-16 surrogates, which only JSON escapes can produce and no UTF-8
# encoder can write.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_FIELD_NAME = re.compile(r"[a-z][A-Za-z0-9]{0,63}")
UNSTORABLE_MESSAGE = "Text must not contain NUL or unpaired surrogate characters"


class UnstorableText(HTTPException):
    """A string in the body that is not storable Unicode (400, naming the top-level field)."""

    def __init__(self, field: str | None) -> None:
        super().__init__(400, UNSTORABLE_MESSAGE)
        self.field = field


def _find_unstorable(value: Any) -> tuple[bool, str | None]:
    """Whether any string (keys included) is unstorable, and the top-level key it sits under."""
    stack: list[tuple[Any, str | None]] = [(value, None)]
    while stack:
        item, field = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return True, field
        elif isinstance(item, dict):
            for key, child in item.items():
                top = key if field is None else field
                if _UNSTORABLE.search(key):
                    return True, None if field is None else field
                stack.append((child, top))
        elif isinstance(item, list):
            stack.extend((child, field) for child in item)
    return False, None


def parse_json_body(body: bytes) -> Any:
    """A request body as the services read it: exact decimals, and storable text only."""
    try:
        parsed = json.loads(body, parse_float=Decimal, parse_constant=Decimal)
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as exc:  # bad UTF-8, a 5,000-digit integer, nesting past the stack
        raise json.JSONDecodeError(str(exc), "", 0) from None
    found, field = _find_unstorable(parsed)
    if found:
        # The key is the client's text: it is echoed as `field` only when it can be one of ours (a camelCase name).
        raise UnstorableText(field if field is not None and _FIELD_NAME.fullmatch(field) else None)
    return parsed


class _JSONBodyRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json_body(await self.body())
        return self._json


class ServiceRoute(APIRoute):
    """An APIRoute whose handler reads JSON bodies with parse_json_body (FastAPI's custom-route-class pattern)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler  # nothing to parse: no wrapper on the hot GETs

        async def route_handler(request: Request) -> Response:
            return await handler(_JSONBodyRequest(request.scope, request.receive))

        return route_handler
