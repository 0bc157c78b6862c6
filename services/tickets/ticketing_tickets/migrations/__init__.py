"""tickets' Alembic migrations."""
