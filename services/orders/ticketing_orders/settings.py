"""orders settings: the shared ones plus ORDER_EXPIRATION_SECONDS."""

from pydantic import Field

from ticketing_common.settings import ServiceSettings


class Settings(ServiceSettings):
    """Environment of the orders service."""

    order_expiration_seconds: int = Field(default=1800, gt=0, description="How long an order reserves its ticket")
