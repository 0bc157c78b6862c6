"""The database that orders's migrations build is the one its models (and the bus tables) declare."""

from ticketing_orders.models import Base
from ticketing_testing.plugin import Servers, migrated_schema_differences


async def test_the_migrated_database_matches_the_models(servers: Servers) -> None:
    assert await migrated_schema_differences(servers, "ticketing_orders", Base.metadata) == []
