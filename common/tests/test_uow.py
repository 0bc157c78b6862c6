"""The unit of work's autocommit form: what it refuses, so that a route cannot take it where it needs a transaction."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from ticketing_common.events import TicketCreated
from ticketing_common.uow import UnitOfWork


def _autocommit_unit() -> UnitOfWork:
    return UnitOfWork(async_sessionmaker(), transactional=False)


def test_an_autocommit_unit_opens_no_session() -> None:
    with pytest.raises(RuntimeError, match="no transaction"):
        _ = _autocommit_unit().session


def test_an_autocommit_unit_refuses_to_stage_what_nothing_would_commit() -> None:
    uow = _autocommit_unit()
    event = TicketCreated(id=uuid.uuid4(), version=0, title="t", price=1, user_id=uuid.uuid4())
    with pytest.raises(RuntimeError, match="no transaction"):
        uow.enqueue(event)
    with pytest.raises(RuntimeError, match="no transaction"):
        uow.after_commit(lambda: None)


def test_a_transactional_unit_opens_its_session_on_first_use() -> None:
    uow = UnitOfWork(async_sessionmaker())
    assert uow.session is uow.session
