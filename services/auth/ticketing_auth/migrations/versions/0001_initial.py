"""Users, and the bus tables (outbox, inbox, dead letters).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from ticketing_common.migrations import create_bus_tables, drop_bus_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("email = lower(btrim(email))", name="ck_users_email_normalised"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )
    create_bus_tables()


def downgrade() -> None:
    drop_bus_tables()
    op.drop_table("users")
