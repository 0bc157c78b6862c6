"""orders settings: the shared ones plus ORDER_EXPIRATION_SECONDS and MAX_OPEN_ORDERS."""

from pydantic import Field

from ticketing_common.settings import ServiceSettings


class Settings(ServiceSettings):
    """Environment of the orders service."""

    order_expiration_seconds: int = Field(default=1800, gt=0, description="How long an order reserves its ticket")
    max_open_orders: int = Field(default=10, gt=0, description="Open orders one user may hold at once")
