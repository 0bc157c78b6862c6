"""auth tables: users with a unique normalised email and an Argon2id hash."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from ticketing_common.db import model_registry

Base = model_registry()


class User(Base):
    """A person who can sign in."""

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (CheckConstraint("email = lower(btrim(email))", name="email_normalised"),)


class SigninFailure(Base):
    """Failed sign-ins counted in a fixed window per key (`account:<email>` or `address:<ip>`).

    A table of auth's own database rather than a library: the de-facto limiter (`limits`) keeps its state in
    memory, Redis, Memcached, MongoDB or etcd, not Postgres, and the issue asks for no new server.
    """

    __tablename__ = "signin_failures"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    window_start: Mapped[datetime]
    failures: Mapped[int]

    __table_args__ = (Index("ix_signin_failures_window_start", "window_start"),)
