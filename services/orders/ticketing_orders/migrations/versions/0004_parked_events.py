"""Events that arrive before their predecessor wait in parked_events, built from the bus tables' declaration.

Revision ID: 0004
Revises: 0003
"""

from ticketing_common.migrations import add_bus_tables as upgrade
from ticketing_common.migrations import drop_parked_events as downgrade

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

__all__ = ["downgrade", "upgrade"]
