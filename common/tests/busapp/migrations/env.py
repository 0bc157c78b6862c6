"""Alembic environment of the bus test app."""

from ticketing_common.migrations import run_migrations

from busapp import Base

run_migrations(Base.metadata)
