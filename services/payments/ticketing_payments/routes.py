"""payments routes under /api/payments."""

from __future__ import annotations

from fastapi import APIRouter, status

from ticketing_common.auth import CurrentUser
from ticketing_common.errors import error_responses
from ticketing_common.routing import ServiceRoute
from ticketing_common.uow import UnitOfWorkDep
from ticketing_payments import service
from ticketing_payments.deps import ProviderDep
from ticketing_payments.schemas import PaymentCreate, PaymentRead

router = APIRouter(prefix="/api/payments", tags=["payments"], route_class=ServiceRoute)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=PaymentRead,
    responses=error_responses(400, 401, 402, 404),
)
async def create_payment(
    body: PaymentCreate, user: CurrentUser, uow: UnitOfWorkDep, provider: ProviderDep
) -> PaymentRead:
    """Charge the price of one of your orders; an order is charged at most once."""
    payment_id = await service.create_payment(
        uow=uow, provider=provider, user_id=user.id, order_id=body.order_id, token=body.token
    )
    return PaymentRead(id=payment_id)
