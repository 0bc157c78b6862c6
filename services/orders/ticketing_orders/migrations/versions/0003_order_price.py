"""Orders keep the price they were placed at (issue 15 #3); the replica keeps each ticket's seller (#9).

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
    op.add_column("orders", sa.Column("price", sa.Numeric(10, 2), nullable=True))
    # Existing orders: the replica's price is the best record there is of what they were placed at.
    op.execute("UPDATE orders SET price = tickets.price FROM tickets WHERE tickets.id = orders.ticket_id")
    op.alter_column("orders", "price", nullable=False)
    op.add_column("tickets", sa.Column("user_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    op.drop_column("tickets", "user_id")
    op.drop_column("orders", "price")
