"""auth's Alembic migrations."""
