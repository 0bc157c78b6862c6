"""Expiration jobs, and the bus tables (outbox, inbox, dead letters).

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
        "expiration_jobs",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("fired_at", sa.DateTime(timezone=True)),
        sa.Column("cancelled_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name="pk_expiration_jobs"),
    )
    op.create_index(
        "ix_expiration_jobs_pending",
        "expiration_jobs",
        ["expires_at"],
        postgresql_where=sa.text("fired_at IS NULL AND cancelled_at IS NULL"),
    )
    create_bus_tables()


def downgrade() -> None:
    drop_bus_tables()
    op.drop_index("ix_expiration_jobs_pending", table_name="expiration_jobs")
    op.drop_table("expiration_jobs")
