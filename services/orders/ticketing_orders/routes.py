"""orders routes under /api/orders: parse, call the service, shape the answer."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from ticketing_common.auth import CurrentUser
from ticketing_common.errors import error_responses
from ticketing_common.pagination import DEFAULT_LIMIT, Cursor, Limit, PageCursor, next_page_headers
from ticketing_common.routing import ServiceRoute
from ticketing_common.uow import UnitOfWorkDep
from ticketing_common.validation import parse_id
from ticketing_orders import service
from ticketing_orders.deps import SettingsDep
from ticketing_orders.schemas import OrderCreate, OrderRead

router = APIRouter(prefix="/api/orders", tags=["orders"], route_class=ServiceRoute)


def _read(order: service.OrderView) -> OrderRead:
    return OrderRead.model_validate(order)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderRead,
    response_model_exclude_none=True,
    responses=error_responses(400, 401, 404, 409),
)
async def create_order(body: OrderCreate, user: CurrentUser, uow: UnitOfWorkDep, settings: SettingsDep) -> OrderRead:
    """Reserve a ticket for ORDER_EXPIRATION_SECONDS (not your own; at most MAX_OPEN_ORDERS open); order.created."""
    order = await service.create_order(
        uow=uow,
        user_id=user.id,
        ticket_id=body.ticket_id,
        expiration_seconds=settings.order_expiration_seconds,
        max_open_orders=settings.max_open_orders,
    )
    return _read(order)


@router.get("", response_model=list[OrderRead], response_model_exclude_none=True, responses=error_responses(400, 401))
async def list_orders(
    user: CurrentUser,
    uow: UnitOfWorkDep,
    request: Request,
    response: Response,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> list[OrderRead]:
    """The caller's orders with their tickets, newest first; the next page is in X-Next-Cursor and Link."""
    page, next_cursor = await service.list_orders(uow=uow, user_id=user.id, limit=limit, after=PageCursor.parse(cursor))
    response.headers.update(next_page_headers(request, limit, next_cursor))
    return [_read(order) for order in page]


@router.get(
    "/{order_id}", response_model=OrderRead, response_model_exclude_none=True, responses=error_responses(401, 404)
)
async def read_order(order_id: str, user: CurrentUser, uow: UnitOfWorkDep) -> OrderRead:
    """One of the caller's orders."""
    order = await service.get_order(uow=uow, order_id=parse_id(order_id), user_id=user.id)
    return _read(order)


@router.delete("/{order_id}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(400, 401, 404))
async def cancel_order(order_id: str, user: CurrentUser, uow: UnitOfWorkDep) -> Response:
    """Cancel one of the caller's orders; publishes order.cancelled unless it already was cancelled."""
    await service.cancel_order(uow=uow, order_id=parse_id(order_id), user_id=user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
