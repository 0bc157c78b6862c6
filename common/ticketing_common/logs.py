"""JSON logs on stdout, each line carrying the service name and the current X-Request-ID."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from ticketing_common.requestid import current_request_id


class _ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.request_id = current_request_id()
        return True


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send JSON lines to stdout; safe to call more than once (tests build many apps)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(request_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_ContextFilter(service))
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_ticketing", False):
            root.removeHandler(existing)
    handler._ticketing = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's access log duplicates ours and carries no request id.
    logging.getLogger("uvicorn.access").disabled = True
