"""Alembic environment of the bus test app."""

from busapp import Base
from ticketing_common.migrations import run_migrations

run_migrations(Base.metadata)
