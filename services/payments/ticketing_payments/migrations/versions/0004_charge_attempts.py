"""Charge attempts: an order being charged is recorded before the provider is called, for the reconciler.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "charge_attempts",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name="pk_charge_attempts"),
    )


def downgrade() -> None:
    op.drop_table("charge_attempts")
