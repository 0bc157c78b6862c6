"""auth settings: the shared ones plus the sign-in limits (JWT_TTL_SECONDS and COOKIE_SECURE matter most here)."""

from pydantic import Field

from ticketing_common.settings import ServiceSettings


class Settings(ServiceSettings):
    """Environment of the auth service."""

    signin_max_failures_per_account: int = Field(
        default=10, gt=0, description="Failed sign-ins for one email in a window before 429"
    )
    signin_max_failures_per_address: int = Field(
        default=100, gt=0, description="Failed sign-ins from one client address in a window before 429"
    )
    signin_window_seconds: int = Field(default=900, gt=0, description="The sign-in limits' window")
