"""auth consumes no events: users are not replicated to other services (tokens carry what they need)."""

from typing import Any

from ticketing_common.listener import Listener

LISTENERS: tuple[type[Listener[Any]], ...] = ()
