"""Events that arrive before their predecessor wait in parked_events, built from the bus tables' declaration.

Revision ID: 0003
Revises: 0002
"""

from ticketing_common.migrations import add_bus_tables as upgrade
from ticketing_common.migrations import drop_parked_events as downgrade

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

__all__ = ["downgrade", "upgrade"]
