"""tickets settings: only what every service needs."""

from ticketing_common.settings import ServiceSettings


class Settings(ServiceSettings):
    """Environment of the tickets service."""
