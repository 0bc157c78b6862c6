"""Alembic helpers: each service keeps its own migrations and calls these from env.py and its versions."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from typing import Any

import sqlalchemy as sa
from alembic import command, context, op
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from ticketing_common.db import BUS_METADATA

OUTBOX_CHANNEL = "ticketing_outbox"


def alembic_config(package: str, url: str | None = None) -> Config:
    """A Config for `<package>/migrations`, with no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", f"{package}:migrations")
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision(package: str) -> str | None:
    """The head revision of a service's migrations."""
    return ScriptDirectory.from_config(alembic_config(package)).get_current_head()


def upgrade(package: str, url: str, revision: str = "head") -> None:
    """Apply a service's migrations (synchronous; run it in a thread from async code)."""
    command.upgrade(alembic_config(package, url), revision)


def run_migrations(metadata: MetaData) -> None:
    """The body of every service's migrations/env.py; the bus tables join the service's metadata."""
    url = context.config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("configuration error: DATABASE_URL is missing")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata(metadata), literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return

    def run(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=target_metadata(metadata), compare_type=True)
        with context.begin_transaction():
            # Replicas starting together (an initContainer each) take turns; the later ones find nothing to do.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('ticketing-migrations'))"))
            context.run_migrations()

    async def run_async() -> None:
        engine = create_async_engine(url, poolclass=sa.pool.NullPool)
        async with engine.connect() as connection:
            await connection.run_sync(run)
        await engine.dispose()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(run_async())
        return
    # Called from async code (tests, the dev runner): run on a private loop in a worker thread.
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            asyncio.run(run_async())
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=in_thread, name="alembic")
    worker.start()
    worker.join()
    if errors:
        raise errors[0]


def create_bus_tables() -> None:
    """Create the outbox, inbox and dead-letter tables from their one declaration, and the relays' wake-up trigger.

    Built from BUS_METADATA, so the migration and the models cannot drift; a later change to those tables needs a
    migration of its own, which each service's schema test demands.
    """
    BUS_METADATA.create_all(op.get_bind())
    # A statement trigger: one NOTIFY per transaction that wrote events, delivered only if it commits.
    op.execute(
        f"""CREATE FUNCTION notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_notify('{OUTBOX_CHANNEL}', ''); RETURN NULL; END $$"""
    )
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION notify_outbox()"
    )


def drop_bus_tables() -> None:
    """Undo create_bus_tables."""
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS notify_outbox()")
    BUS_METADATA.drop_all(op.get_bind())


def add_bus_columns() -> None:
    """Add the columns the bus tables' declaration has and the database lacks: a later migration's whole body.

    Each column is built from BUS_METADATA, like create_bus_tables, so a database created by an older 0001 and one
    created by today's end up alike; a database that already has a column is left as it is.
    """
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    for table in BUS_METADATA.sorted_tables:
        if not inspector.has_table(table.name):
            continue  # a table a later migration creates (add_bus_tables), columns and all
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                op.add_column(table.name, column._copy())


def add_bus_tables() -> None:
    """Create the bus tables the declaration has and the database lacks, and their missing columns.

    Built from BUS_METADATA like create_bus_tables: a database whose 0001 already made a newer table keeps it.
    """
    BUS_METADATA.create_all(op.get_bind(), checkfirst=True)
    add_bus_columns()


def drop_parked_events() -> None:
    """Downgrade of the migration that added parked_events."""
    op.execute("DROP TABLE IF EXISTS parked_events")


def drop_bus_columns(table: str, *columns: str) -> None:
    """Undo add_bus_columns for the named columns."""
    for column in columns:
        op.execute(f'ALTER TABLE {table} DROP COLUMN IF EXISTS "{column}"')


def drop_dead_letter_resolution() -> None:
    """Downgrade of every service's 0002: the dead letters' resolution columns go."""
    drop_bus_columns("dead_letters", "resolved_at", "resolution", "resolved_by", "resolution_note")


def target_metadata(metadata: MetaData) -> list[MetaData]:
    """What a service database holds: the service's own tables and the bus tables."""
    return [metadata, BUS_METADATA]


def schema_differences(connection: Connection, metadata: MetaData) -> list[Any]:
    """How the database on `connection` differs from the service's models and the bus tables; [] when they agree.

    Alembic's autogenerate comparison (types included), so a migration that drifts from a model fails a test.
    """
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    differences: list[Any] = compare_metadata(context, target_metadata(metadata))  # type: ignore[arg-type]
    return differences


def main(argv: list[str] | None = None) -> None:
    """`python -m ticketing_common.migrations PACKAGE [REVISION]`: upgrade a service database."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("package", help="the service package, e.g. ticketing_auth")
    parser.add_argument("revision", nargs="?", default="head")
    args = parser.parse_args(argv)
    url = os.environ.get("DATABASE_URL")
    if not url:
        print("configuration error: DATABASE_URL is missing", file=sys.stderr)
        raise SystemExit(2)
    if url.startswith(("postgres://", "postgresql://")):
        url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    upgrade(args.package, url, args.revision)


if __name__ == "__main__":
    main()
