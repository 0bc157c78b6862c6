"""payments' Alembic migrations."""
