"""auth settings: only what every service needs (JWT_TTL_SECONDS and COOKIE_SECURE matter most here)."""

from ticketing_common.settings import ServiceSettings


class Settings(ServiceSettings):
    """Environment of the auth service."""
