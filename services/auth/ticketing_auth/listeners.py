"""auth consumes no events: users are not replicated to other services (tokens carry what they need)."""

from collections.abc import Callable
from typing import Any

from ticketing_common.listener import Listener, ListenerWiring

LISTENERS: tuple[Callable[[ListenerWiring], Listener[Any]], ...] = ()
