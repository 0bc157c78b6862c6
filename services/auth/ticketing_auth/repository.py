"""auth queries: every statement the service runs, and nothing else."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from ticketing_auth.models import User
from ticketing_common.uow import UnitOfWork


async def add_user(uow: UnitOfWork, *, email: str, password_hash: str) -> User | None:
    """Insert a user; None if the email is taken (the unique index decides, so a race cannot slip through)."""
    statement = (
        insert(User)
        .values(id=uuid.uuid4(), email=email, password_hash=password_hash)
        .on_conflict_do_nothing(index_elements=[User.email])
        .returning(User)
    )
    user: User | None = (await uow.session.scalars(statement)).one_or_none()
    return user


async def find_user_by_email(uow: UnitOfWork, email: str) -> User | None:
    """The user with this (normalised) email, if any."""
    user: User | None = (await uow.session.execute(select(User).where(User.email == email))).scalar_one_or_none()
    return user
