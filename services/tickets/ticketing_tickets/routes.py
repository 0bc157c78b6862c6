"""tickets routes under /api/tickets."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from pydantic import TypeAdapter

from ticketing_common.auth import CurrentUser
from ticketing_common.errors import error_responses
from ticketing_common.pagination import DEFAULT_LIMIT, Cursor, Limit, PageCursor, next_page_headers
from ticketing_common.routing import ServiceRoute
from ticketing_common.uow import UnitOfWorkDep, autocommit_unit
from ticketing_common.validation import parse_id
from ticketing_tickets import service
from ticketing_tickets.deps import OrderEventsPendingDep
from ticketing_tickets.schemas import TicketCreate, TicketRead, TicketUpdate

router = APIRouter(prefix="/api/tickets", tags=["tickets"], route_class=ServiceRoute)

_PAGE = TypeAdapter(list[TicketRead])


def _read(ticket: service.TicketState) -> TicketRead:
    # The state was validated on its way in; serializing it needs no second validation.
    return TicketRead.model_construct(
        id=ticket.id,
        title=ticket.title,
        price=ticket.price,
        user_id=ticket.user_id,
        version=ticket.version,
        order_id=ticket.order_id,
    )


def _ticket_response(ticket: service.TicketState, status_code: int = status.HTTP_200_OK) -> Response:
    return Response(_read(ticket).model_dump_json(by_alias=True), status_code, media_type="application/json")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TicketRead, responses=error_responses(400, 401))
async def create_ticket(body: TicketCreate, user: CurrentUser, request: Request) -> Response:
    """List a ticket for sale; publishes ticket.created."""
    ticket = await service.create_ticket(
        uow=autocommit_unit(request), user_id=user.id, title=body.title, price=body.price
    )
    return _ticket_response(ticket, status.HTTP_201_CREATED)


@router.get(
    "",
    response_model=list[TicketRead],
    responses={
        200: {
            "description": "Unreserved tickets, newest first. When there are more, the `Link` header "
            '(`rel="next"`) and the `X-Next-Cursor` header give the next page.',
        },
        **error_responses(400),
    },
)
async def list_tickets(
    request: Request,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """The tickets no order reserves, newest first, one page at a time."""
    page, next_cursor = await service.list_unreserved_tickets(
        uow=autocommit_unit(request), limit=limit, after=PageCursor.parse(cursor)
    )
    return Response(
        _PAGE.dump_json([_read(t) for t in page], by_alias=True),
        media_type="application/json",
        headers=next_page_headers(request, limit, next_cursor),
    )


@router.get("/{id}", response_model=TicketRead, responses=error_responses(404))
async def read_ticket(id: str, request: Request) -> Response:
    """One ticket, reserved or not."""
    ticket = await service.get_ticket(uow=autocommit_unit(request), ticket_id=parse_id(id))
    return _ticket_response(ticket)


@router.put("/{id}", response_model=TicketRead, responses=error_responses(400, 401, 404, 409, 503))
async def update_ticket(
    id: str, body: TicketUpdate, user: CurrentUser, uow: UnitOfWorkDep, order_events_pending: OrderEventsPendingDep
) -> Response:
    """Change the title and price of your unreserved ticket; publishes ticket.updated.

    503 with Retry-After while an order for it may still be on its way to tickets.
    """
    ticket = await service.update_ticket(
        uow=uow,
        ticket_id=parse_id(id),
        user_id=user.id,
        title=body.title,
        price=body.price,
        order_events_pending=order_events_pending,
    )
    return _ticket_response(ticket)
