"""The bus tables' migration is built from their declaration, so a database migrated with it matches them."""

import asyncio

from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from busapp import Base
from ticketing_common.migrations import alembic_config, schema_differences
from ticketing_testing.plugin import Servers, migrated_schema_differences

RESOLUTION_COLUMNS = {"resolved_at", "resolution", "resolved_by", "resolution_note"}


async def test_the_bus_tables_migration_matches_their_declaration(servers: Servers) -> None:
    assert await migrated_schema_differences(servers, "busapp", Base.metadata) == []


async def columns_or_tables(url: str, query: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return set((await conn.execute(text(query))).scalars())
    finally:
        await engine.dispose()


DEAD_LETTER_COLUMNS = "SELECT column_name FROM information_schema.columns WHERE table_name = 'dead_letters'"
TABLES = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"


async def downgraded(servers: Servers, name: str, revision: str) -> str:
    """A database migrated to head and back to `revision`: as one made before the later migrations."""
    url = servers.postgres.create_database(name)
    await asyncio.to_thread(command.upgrade, alembic_config("busapp", url), "head")
    await asyncio.to_thread(command.downgrade, alembic_config("busapp", url), revision)
    return url


async def upgraded_matches_the_declaration(url: str) -> bool:
    await asyncio.to_thread(command.upgrade, alembic_config("busapp", url), "head")
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(schema_differences, Base.metadata) == []
    finally:
        await engine.dispose()


async def test_a_database_without_the_resolution_columns_gets_them_from_the_declaration(servers: Servers) -> None:
    url = await downgraded(servers, "test_busapp_columns", "0001")
    assert not RESOLUTION_COLUMNS & await columns_or_tables(url, DEAD_LETTER_COLUMNS)
    assert await upgraded_matches_the_declaration(url)
    assert await columns_or_tables(url, DEAD_LETTER_COLUMNS) >= RESOLUTION_COLUMNS


async def test_a_database_without_parked_events_gets_the_table_from_the_declaration(servers: Servers) -> None:
    url = await downgraded(servers, "test_busapp_parked", "0002")
    assert "parked_events" not in await columns_or_tables(url, TABLES)
    assert await upgraded_matches_the_declaration(url)
    assert "parked_events" in await columns_or_tables(url, TABLES)
