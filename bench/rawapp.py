"""The raw baselines of the HTTP benchmarks: bare FastAPI endpoints doing one asyncpg statement each.

Run like a service: `uvicorn --factory bench.rawapp:create_app` with DATABASE_URL set (the tickets database, so the
select reads the very rows our GET /api/tickets/{id} reads). No auth, no outbox, no SQLAlchemy, no middleware.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

RAW_TABLE = """
CREATE TABLE IF NOT EXISTS raw_tickets (
    id uuid PRIMARY KEY,
    title varchar(200) NOT NULL,
    price numeric(10, 2) NOT NULL,
    user_id uuid NOT NULL,
    version integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
)"""
_INSERT = "INSERT INTO raw_tickets (id, title, price, user_id) VALUES ($1, $2, $3, $4)"
_SELECT = "SELECT id, title, price, user_id, version, order_id FROM tickets WHERE id = $1"
_USER = uuid.UUID(int=1)


class RawTicket(BaseModel):
    """The same body as POST /api/tickets, parsed by FastAPI as any endpoint would."""

    title: str
    price: Decimal


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No reset query on release; asyncpg still rolls back a transaction left open."""


def create_app() -> FastAPI:
    """The baseline app; its pool matches the services' engine (10 connections, 20 more on demand)."""
    dsn = "postgresql://" + os.environ["DATABASE_URL"].split("://", 1)[1]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The same reset as the services' runtime pool (see ticketing_common.app): a
        # baseline paying asyncpg's default reset round trip on every release would flatter the ratio.
        pool = await asyncpg.create_pool(dsn, min_size=10, max_size=30, reset=_keep_session)
        assert pool is not None
        await pool.execute(RAW_TABLE)
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/raw/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/raw/tickets", status_code=201)
    async def create(body: RawTicket, request: Request) -> dict[str, object]:
        ticket_id = uuid.uuid4()
        await request.app.state.pool.execute(_INSERT, ticket_id, body.title, body.price, _USER)
        return {"id": str(ticket_id), "title": body.title, "price": float(body.price), "userId": str(_USER)}

    @app.get("/raw/tickets/{ticket_id}")
    async def read(ticket_id: uuid.UUID, request: Request) -> JSONResponse:
        row = await request.app.state.pool.fetchrow(_SELECT, ticket_id)
        if row is None:
            return JSONResponse({"errors": [{"message": "Not Found"}]}, status_code=404)
        return JSONResponse(
            {
                "id": str(row["id"]),
                "title": row["title"],
                "price": float(row["price"]),
                "userId": str(row["user_id"]),
                "version": row["version"],
                "orderId": str(row["order_id"]) if row["order_id"] else None,
            }
        )

    return app
