"""Replica table and the bus tables.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from ticketing_common.migrations import create_bus_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replica",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("applied", sa.Integer(), nullable=False),
    )
    op.create_table(
        "handled",
        sa.Column("event_key", sa.String(), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    create_bus_tables()
