"""Alembic environment for payments: the shared runner, with this service's metadata."""

from ticketing_common.migrations import run_migrations
from ticketing_payments.models import Base

run_migrations(Base.metadata)
