"""payments' typed route dependencies."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from ticketing_payments.providers import PaymentProvider


def get_provider(request: Request) -> PaymentProvider:
    """The app's payment provider (PAYMENT_PROVIDER)."""
    return cast(PaymentProvider, request.app.state.payment_provider)


ProviderDep = Annotated[PaymentProvider, Depends(get_provider)]
