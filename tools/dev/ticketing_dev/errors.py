"""The one error every part of the dev stack raises for the user: a single line, never a traceback."""

from __future__ import annotations


class DevStackError(RuntimeError):
    """The dev stack cannot start or be reached; the message is one line for the user."""
