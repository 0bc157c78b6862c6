"""orders' typed route dependencies."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from ticketing_orders.settings import Settings


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return cast(Settings, request.app.state.settings)


SettingsDep = Annotated[Settings, Depends(get_settings)]
