"""Dead letters record who retried or dropped them, when and why.

Revision ID: 0002
Revises: 0001
"""

from ticketing_common.migrations import add_bus_columns, drop_bus_columns

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_bus_columns()


def downgrade() -> None:
    drop_bus_columns("dead_letters", "resolved_at", "resolution", "resolved_by", "resolution_note")
