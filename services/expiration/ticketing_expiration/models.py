"""expiration tables: one durable job per order, fired once or cancelled."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, text
from sqlalchemy.orm import Mapped, mapped_column

from ticketing_common.db import model_registry

Base = model_registry()


class ExpirationJob(Base):
    """An order's reservation timer.

    `version` is the last order version applied (0 created, 1 cancelled). A cancel that overtakes its create leaves a
    tombstone (version 1, cancelled, no expires_at), so the create that follows is ignored rather than scheduled.
    """

    __tablename__ = "expiration_jobs"

    order_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    version: Mapped[int]
    expires_at: Mapped[datetime | None]
    fired_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))

    __table_args__ = (
        # Only pending jobs are indexed, so the scheduler's "next due" and "claim due" stay O(log pending)
        # however many fired and cancelled rows accumulate.
        Index(
            "ix_expiration_jobs_pending",
            "expires_at",
            postgresql_where=text("fired_at IS NULL AND cancelled_at IS NULL"),
        ),
    )
