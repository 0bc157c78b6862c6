"""tickets' typed route dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ticketing_common.errors import consumers_behind
from ticketing_common.events import OrderCancelled, OrderCreated, stream_for
from ticketing_common.listener import durable_name
from ticketing_tickets.service import OrderEventsPending

# The consumers that bring the orders holding tickets: while either is behind, an order may be on its way.
ORDER_CONSUMERS = [(stream_for(e.subject), durable_name("tickets", e.subject)) for e in (OrderCreated, OrderCancelled)]
# How long an edit waits for those consumers to apply what was on the bus when it asked. The edit holds its
# ticket's row lock meanwhile, so an order.created for this very ticket cannot be applied and the wait ends in the
# 503; order events for other tickets go through within milliseconds, and the edit with them.
ORDER_EVENTS_WAIT_SECONDS = 0.5


async def get_order_events_pending(request: Request) -> OrderEventsPending:
    """The question an edit asks before it commits: are order events still on their way to tickets?

    async, though it awaits nothing: FastAPI runs a plain `def` dependency on a worker thread, a hop per edit.
    """

    async def pending() -> bool:
        return await consumers_behind(request, ORDER_CONSUMERS, wait=ORDER_EVENTS_WAIT_SECONDS)

    return pending


OrderEventsPendingDep = Annotated[OrderEventsPending, Depends(get_order_events_pending)]
