"""Alembic environment for auth: the shared runner, with this service's metadata."""

from ticketing_auth.models import Base
from ticketing_common.migrations import run_migrations

run_migrations(Base.metadata)
