"""What the dev stack prints: every child's output as prefixed, readable lines, the runner's own lines, the banner."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

COLORS = ["36", "33", "35", "32", "34", "91", "96", "93", "95", "92"]  # ANSI colours the children get in turn
_KNOWN_LOG_KEYS = {"time", "level", "logger", "message", "service", "request_id", "exc_info", "taskName"}


def pretty_log_line(line: str) -> str:
    """A service's JSON log line as `HH:MM:SS LEVEL logger: message [request id]`; other lines unchanged."""
    if not line.startswith("{"):
        return line
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict) or "message" not in record:
        return line
    stamp = str(record.get("time", ""))[11:19]
    text = f"{stamp} {record.get('level', ''):<7} {record.get('logger', '')}: {record['message']}"
    extras = {k: v for k, v in record.items() if k not in _KNOWN_LOG_KEYS and v is not None}
    if extras:
        text += " " + " ".join(f"{k}={v}" for k, v in extras.items())
    if record.get("request_id"):
        text += f" [{record['request_id']}]"
    if record.get("exc_info"):
        text += "\n" + str(record["exc_info"])
    return text


class LogPump:
    """Turns a child's output into prefixed lines on the shared log fd."""

    def __init__(self, name: str, out_fd: int, color: str | None) -> None:
        self.name = name
        self.out_fd = out_fd
        label = f"{name:<12}|"
        self.prefix = f"\x1b[{color}m{label}\x1b[0m " if color else f"{label} "
        self.buffer = b""

    def feed(self, chunk: bytes) -> None:
        """Take more output; print every complete line."""
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for raw in lines:
            self._emit(raw)
        if len(self.buffer) > 65536:  # a huge unterminated line: print what we have
            self._emit(self.buffer)
            self.buffer = b""

    def close(self) -> None:
        """Print what is left of an unterminated last line."""
        if self.buffer:
            self._emit(self.buffer)
            self.buffer = b""

    def _emit(self, raw: bytes) -> None:
        text = pretty_log_line(raw.decode(errors="replace").rstrip("\r"))
        out = "".join(f"{self.prefix}{part}\n" for part in text.split("\n"))
        with contextlib.suppress(OSError):
            os.write(self.out_fd, out.encode())


class Printer:
    """The runner's own lines, prefixed like the services' lines."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.colors = os.isatty(fd) and "NO_COLOR" not in os.environ

    def say(self, message: str, label: str = "dev") -> None:
        """Print a message, each of its lines prefixed by the label."""
        prefix = f"{label:<12}|"
        if self.colors:
            prefix = f"\x1b[1m{prefix}\x1b[0m"
        out = "".join(f"{prefix} {line}\n" for line in message.split("\n"))
        with contextlib.suppress(OSError):
            os.write(self.fd, out.encode())

    def raw(self, text: str) -> None:
        """Print text as it is (the banner)."""
        with contextlib.suppress(OSError):
            os.write(self.fd, text.encode())


class PrinterHandler(logging.Handler):
    """Log records of the runner's own loggers (the gateway's) as prefixed lines."""

    def __init__(self, printer: Printer, label: str) -> None:
        super().__init__()
        self.printer = printer
        self.label = label

    def emit(self, record: logging.LogRecord) -> None:
        """Print one record as `HH:MM:SS LEVEL message` under the label."""
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        self.printer.say(f"{stamp} {record.levelname:<7} {record.getMessage()}", label=self.label)


def banner(
    *,
    elapsed: float,
    waiting: list[str],
    gateway_url: str,
    routes_file: Path,
    apis: list[tuple[str, str]],
    nats_url: str,
    monitor_url: str,
    postgres_url: str,
    state_dir: Path,
) -> str:
    """What `ticketing dev up` prints once every service is ready (or given up on): where everything is."""
    if waiting:
        headline = f"ticketing dev stack is up after {elapsed:.1f}s, but NOT READY: {', '.join(waiting)}"
    else:
        headline = f"ticketing dev stack is up (every /readyz green {elapsed:.1f}s after start)"
    lines = ["", headline, f"  gateway     {gateway_url}   (routes of {routes_file})"]
    lines += [f"  {name:<11} {where}" for name, where in apis]
    lines += [
        f"  NATS        {nats_url}",
        f"  monitoring  {monitor_url}   (`ticketing broker`, `ticketing events tail`)",
        f"  Postgres    {postgres_url}",
        f"  state       {state_dir}",
        "Ctrl-C (or `ticketing dev down`) stops everything; data persists until `make dev-reset`.",
        "",
    ]
    return "\n".join(lines) + "\n"
