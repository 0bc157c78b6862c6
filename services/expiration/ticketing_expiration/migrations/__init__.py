"""expiration's Alembic migrations."""
