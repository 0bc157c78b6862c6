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


async def dead_letter_columns(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            query = text("SELECT column_name FROM information_schema.columns WHERE table_name = 'dead_letters'")
            return set((await conn.execute(query)).scalars())
    finally:
        await engine.dispose()


async def test_a_database_without_the_resolution_columns_gets_them_from_the_declaration(servers: Servers) -> None:
    url = servers.postgres.create_database("test_busapp_columns")
    await asyncio.to_thread(command.upgrade, alembic_config("busapp", url), "head")
    await asyncio.to_thread(command.downgrade, alembic_config("busapp", url), "0001")
    assert not RESOLUTION_COLUMNS & await dead_letter_columns(url)  # as a database made before them

    await asyncio.to_thread(command.upgrade, alembic_config("busapp", url), "head")
    assert await dead_letter_columns(url) >= RESOLUTION_COLUMNS
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(schema_differences, Base.metadata) == []
    finally:
        await engine.dispose()
