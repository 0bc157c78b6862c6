"""payments routes under /api/payments."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from ticketing_common.auth import CurrentUser
from ticketing_common.db import SessionDep
from ticketing_common.errors import error_responses
from ticketing_common.routing import ServiceRoute
from ticketing_payments import service
from ticketing_payments.providers import PaymentProvider
from ticketing_payments.schemas import PaymentCreate, PaymentRead

router = APIRouter(prefix="/api/payments", tags=["payments"], route_class=ServiceRoute)


def get_provider(request: Request) -> PaymentProvider:
    """The app's payment provider (PAYMENT_PROVIDER)."""
    provider: PaymentProvider = request.app.state.payment_provider
    return provider


ProviderDep = Annotated[PaymentProvider, Depends(get_provider)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=PaymentRead,
    responses=error_responses(400, 401, 402, 404),
)
async def create_payment(
    body: PaymentCreate, user: CurrentUser, session: SessionDep, provider: ProviderDep
) -> PaymentRead:
    """Charge the price of one of your orders; an order is charged at most once."""
    payment = await service.create_payment(
        session=session, provider=provider, user_id=user.id, order_id=body.order_id, token=body.token
    )
    return PaymentRead(id=payment.id)
