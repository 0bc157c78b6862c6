"""Tickets, order versions, and the bus tables (outbox, inbox, dead letters).

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
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("version", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("price > 0", name="ck_tickets_price_positive"),
        sa.CheckConstraint("version >= 0", name="ck_tickets_version_not_negative"),
        sa.PrimaryKeyConstraint("id", name="pk_tickets"),
    )
    op.create_index(
        "ix_tickets_unreserved_newest",
        "tickets",
        [sa.text("created_at DESC"), sa.text("id DESC")],
        postgresql_where=sa.text("order_id IS NULL"),
    )
    op.create_table(
        "order_versions",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("ticket_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name="pk_order_versions"),
    )
    op.create_index(
        "ix_order_versions_live",
        "order_versions",
        ["ticket_id", sa.text("expires_at DESC")],
        postgresql_where=sa.text("NOT cancelled"),
    )
    create_bus_tables()


def downgrade() -> None:
    drop_bus_tables()
    op.drop_index("ix_order_versions_live", table_name="order_versions")
    op.drop_table("order_versions")
    op.drop_index("ix_tickets_unreserved_newest", table_name="tickets")
    op.drop_table("tickets")
