"""A tiny service built on common, with one table, two listeners and one route, for the bus tests."""

from __future__ import annotations

import logging
import uuid
from typing import Any, ClassVar

from fastapi import APIRouter, FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from ticketing_common.app import ServiceSpec, create_service_app
from ticketing_common.db import model_registry
from ticketing_common.events import TicketCreated, TicketUpdated
from ticketing_common.listener import Listener, ListenerWiring, version_gate
from ticketing_common.requestid import current_request_id
from ticketing_common.routing import ServiceRoute
from ticketing_common.settings import ServiceSettings
from ticketing_common.uow import UnitOfWork, UnitOfWorkDep
from ticketing_testing.plugin import RunningService

logger = logging.getLogger("busapp")


Base = model_registry()


class Replica(Base):
    """A version-ordered copy of tickets, as a consuming service would keep one."""

    __tablename__ = "replica"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    title: Mapped[str]
    version: Mapped[int]
    applied: Mapped[int] = mapped_column(default=1)


class Handled(Base):
    """How many times handlers ran to commit, per event id: the inbox must keep this at one."""

    __tablename__ = "handled"

    event_key: Mapped[str] = mapped_column(primary_key=True)
    count: Mapped[int]


async def count_handling(session: AsyncSession, key: str) -> None:
    row = await session.get(Handled, key, with_for_update=True)
    if row is None:
        session.add(Handled(event_key=key, count=1))
    else:
        row.count += 1


async def apply_ticket(session: AsyncSession, event: TicketCreated | TicketUpdated) -> None:
    await count_handling(session, f"{event.id}:{event.version}")
    row = await session.get(Replica, event.id, with_for_update=True)
    if not version_gate(row.version if row else None, event.version):
        return
    if row is None:
        session.add(Replica(id=event.id, title=event.title, version=event.version))
    else:
        row.title, row.version, row.applied = event.title, event.version, row.applied + 1


class TicketCreatedListener(Listener[TicketCreated]):
    event_type = TicketCreated
    retry_delay: ClassVar[float] = 0.05

    def __init__(self, wiring: ListenerWiring) -> None:
        super().__init__(wiring)
        self.handled = 0  # per replica, to see that two replicas split the work
        self.request_ids: list[str | None] = []

    async def handle(self, event: TicketCreated, uow: UnitOfWork) -> None:
        await apply_ticket(uow.session, event)
        self.handled += 1
        self.request_ids.append(current_request_id())
        logger.info("applied %s", event.id)


class TicketUpdatedListener(Listener[TicketUpdated]):
    event_type = TicketUpdated
    retry_delay: ClassVar[float] = 0.05
    max_deliver: ClassVar[int] = 6

    async def handle(self, event: TicketUpdated, uow: UnitOfWork) -> None:
        if event.title == "explode":
            raise RuntimeError("this handler always fails")
        await apply_ticket(uow.session, event)


router = APIRouter(prefix="/api/probe", route_class=ServiceRoute)


@router.post("/{fail}", status_code=201)
async def create_probe(fail: str, uow: UnitOfWorkDep) -> dict[str, Any]:
    """Write an event to the outbox; fail afterwards when asked, so the transaction rolls back."""
    event = TicketCreated(id=uuid.uuid4(), version=0, title="probe", price=1, user_id=uuid.uuid4())
    uow.enqueue(event)
    if fail == "fail":
        raise RuntimeError("rolled back on purpose")
    return {"id": str(event.id), "eventId": str(event.event_id)}


def create_app(settings: ServiceSettings) -> FastAPI:
    return create_service_app(
        ServiceSpec(
            name="probe",
            package="busapp",
            api_prefix="/api/probe",
            settings=settings,
            routers=[router],
            listeners=[TicketCreatedListener, TicketUpdatedListener],
        )
    )


async def replica_rows(service: RunningService) -> list[Replica]:
    """The replica's rows, by title."""
    async with service.sessionmaker() as session:
        return list((await session.execute(select(Replica).order_by(Replica.title))).scalars())
