"""Tickets replica, orders with the one-live-order-per-ticket index, and the bus tables.

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
        "tickets",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("price", sa.Numeric(10, 2), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tickets"),
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("ticket_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payment_id", sa.Uuid(), nullable=True),
        sa.Column("stripe_id", sa.String(255), nullable=True),
        sa.Column("refund_status", sa.String(20), nullable=True),
        sa.CheckConstraint(
            "status IN ('created', 'cancelled', 'awaiting:payment', 'complete')", name="ck_orders_status_known"
        ),
        sa.CheckConstraint("refund_status IN ('pending', 'refunded')", name="ck_orders_refund_status_known"),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], name="fk_orders_ticket_id_tickets"),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
    )
    op.create_index(
        "uq_orders_ticket_id_reserving",
        "orders",
        ["ticket_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('created', 'awaiting:payment', 'complete')"),
    )
    op.create_index(
        "ix_orders_user_id_created_at_id", "orders", ["user_id", sa.text("created_at DESC"), sa.text("id DESC")]
    )
    create_bus_tables()


def downgrade() -> None:
    drop_bus_tables()
    op.drop_index("ix_orders_user_id_created_at_id", table_name="orders")
    op.drop_index("uq_orders_ticket_id_reserving", table_name="orders")
    op.drop_table("orders")
    op.drop_table("tickets")
