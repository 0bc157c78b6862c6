"""The bus tables' migration is built from their declaration, so a database migrated with it matches them."""

from busapp import Base
from ticketing_testing.plugin import Servers, migrated_schema_differences


async def test_the_bus_tables_migration_matches_their_declaration(servers: Servers) -> None:
    assert await migrated_schema_differences(servers, "busapp", Base.metadata) == []
