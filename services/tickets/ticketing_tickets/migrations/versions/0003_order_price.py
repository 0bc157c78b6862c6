"""Tickets record the price each order was placed at (issue 15 #3).

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
    # Nullable: orders recorded before this revision keep the ticket's price as it stands.
    op.add_column("order_versions", sa.Column("price", sa.Numeric(10, 2), nullable=True))


def downgrade() -> None:
    op.drop_column("order_versions", "price")
