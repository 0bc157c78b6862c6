"""Failed sign-ins per account and per client address, for the sign-in limit (issue 15 #6).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signin_failures",
        sa.Column("key", sa.String(400), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_signin_failures"),
    )
    op.create_index("ix_signin_failures_window_start", "signin_failures", ["window_start"])


def downgrade() -> None:
    op.drop_index("ix_signin_failures_window_start", table_name="signin_failures")
    op.drop_table("signin_failures")
