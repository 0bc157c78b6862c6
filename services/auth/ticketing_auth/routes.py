"""auth routes under /api/users."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from ticketing_auth import service
from ticketing_auth.deps import SettingsDep
from ticketing_auth.models import User
from ticketing_auth.schemas import CurrentUserRead, UserCreate, UserRead, UserSignin
from ticketing_auth.settings import Settings
from ticketing_common.auth import OptionalUser, clear_session_cookie, create_token, set_session_cookie
from ticketing_common.errors import error_responses
from ticketing_common.routing import ServiceRoute
from ticketing_common.uow import UnitOfWorkDep

router = APIRouter(prefix="/api/users", tags=["users"], route_class=ServiceRoute)


def _start_session(settings: Settings, response: Response, user: User) -> None:
    token = create_token(user_id=user.id, email=user.email, key=settings.jwt_key, ttl_seconds=settings.jwt_ttl_seconds)
    set_session_cookie(response, token, secure=settings.cookie_secure, max_age=settings.jwt_ttl_seconds)


@router.post("/signup", status_code=status.HTTP_201_CREATED, response_model=UserRead, responses=error_responses(400))
async def sign_up(body: UserCreate, uow: UnitOfWorkDep, settings: SettingsDep, response: Response) -> User:
    """Create an account and start a session."""
    user = await service.sign_up(uow=uow, email=body.email, password=body.password)
    _start_session(settings, response, user)
    return user


@router.post("/signin", response_model=UserRead, responses=error_responses(400, 429))
async def sign_in(
    body: UserSignin, uow: UnitOfWorkDep, settings: SettingsDep, request: Request, response: Response
) -> User:
    """Start a session with an email and password; 429 with Retry-After after too many failures."""
    limits = service.SigninLimits(
        per_account=settings.signin_max_failures_per_account,
        per_address=settings.signin_max_failures_per_address,
        window_seconds=settings.signin_window_seconds,
    )
    # The peer as uvicorn resolved it: behind the gateway or the Ingress, from X-Forwarded-For of a trusted proxy
    # (FORWARDED_ALLOW_IPS), so one client cannot use up everyone's allowance and cannot hide behind the proxy.
    address = request.client.host if request.client is not None else "unknown"
    user = await service.sign_in(uow=uow, email=body.email, password=body.password, address=address, limits=limits)
    _start_session(settings, response, user)
    return user


@router.post("/signout")
async def sign_out(settings: SettingsDep, response: Response) -> dict[str, object]:
    """End the session by clearing its cookie."""
    clear_session_cookie(response, secure=settings.cookie_secure)
    return {}


@router.get("/currentuser", response_model=CurrentUserRead, response_model_by_alias=True)
async def read_current_user(user: OptionalUser) -> dict[str, object]:
    """The signed-in user, or null."""
    if user is None:
        return {"currentUser": None}
    return {"currentUser": {"id": str(user.id), "email": user.email, "iat": user.iat}}
