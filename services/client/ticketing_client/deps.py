"""The pages' typed dependencies: the API client, and who the visitor is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from ticketing_client import service
from ticketing_client.api import SESSION_COOKIE, ApiClient, Visitor
from ticketing_client.settings import Settings


def get_api(request: Request) -> ApiClient:
    """The process's API client, built by the lifespan."""
    api: ApiClient = request.app.state.api
    return api


def get_settings(request: Request) -> Settings:
    """The client's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_visitor(request: Request) -> Visitor:
    """The visitor's session cookie and address, as the API should see them."""
    return Visitor(
        session=request.cookies.get(SESSION_COOKIE),
        address=request.client.host if request.client else None,
        forwarded_for=request.headers.get("x-forwarded-for"),
    )


ApiDep = Annotated[ApiClient, Depends(get_api)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
VisitorDep = Annotated[Visitor, Depends(get_visitor)]


@dataclass(frozen=True)
class Page:
    """What every page needs: the API, the visitor, and the signed-in user (None when signed out)."""

    api: ApiClient
    visitor: Visitor
    user: dict[str, Any] | None
    settings: Settings


async def get_page(api: ApiDep, visitor: VisitorDep, settings: SettingsDep) -> Page:
    """Ask the API who is signed in (the navigation shows it)."""
    return Page(api, visitor, await service.current_user(api, visitor), settings)


PageDep = Annotated[Page, Depends(get_page)]
