"""Dead letters record who retried or dropped them, when and why: the columns come from the bus tables' declaration.

Revision ID: 0002
Revises: 0001
"""

from ticketing_common.migrations import add_bus_columns as upgrade
from ticketing_common.migrations import drop_dead_letter_resolution as downgrade

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

__all__ = ["downgrade", "upgrade"]
