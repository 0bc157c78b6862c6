"""Schemathesis against every service's OpenAPI spec, through the ASGI app running its lifespan on the test servers.

Hypothesis generates cases from the spec (valid ones, and invalid ones that break it) and each is sent through the
app's httpx ASGI client, signed in as one test user; every response must be free of 5xx and match the spec: a
documented status code, a documented content type, and a body that conforms to the documented schema. Every error
must also be in the contract's shape, checked here directly rather than through the spec: `{"errors": [{"message",
"field"?}]}` with a non-empty message and a camelCase field, and a 429 or 503 carries Retry-After.

Hypothesis runs in a worker thread (it is synchronous) while the requests run on the test's event loop, where the
app, its database pool and its NATS connection live. Generation uses a fixed seed, so a run is repeatable, shrinking is
off and failures are collected rather than raised, so every case is sent and the run is bounded.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, assume, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from nats.aio.client import Client as NATS
from pydantic import ValidationError
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from ticketing_common.db import DeadLetter
from ticketing_common.events import OrderCancelled, OrderCreated, OrderStatus, OrderTicket, TicketRef
from ticketing_orders import models as orders_models
from ticketing_testing import EventCapture, TestUser, eventually, make_user
from ticketing_testing.plugin import RunningService, ServiceStarter

# A few hundred cases in all keep `make test` quick; TICKETING_FUZZ_CASES=2000 (per service) digs deeper.
CASES_PER_SERVICE = int(os.environ.get("TICKETING_FUZZ_CASES", "150"))
SEED = 7_2024  # fixed: the same cases every run; change it to explore others
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
BASE_URL = "http://testserver"
# expiration serves no API (only /healthz, /readyz, /metrics): its input is the bus, fuzzed below instead.
SERVICES = ("auth", "tickets", "orders", "payments")
EVENT_CASES = 300


@dataclass
class FuzzRun:
    """What one service's fuzzing sent and found."""

    sent: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    unsendable: int = 0
    exhausted: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.sent.values())


_CAMEL_CASE = re.compile(r"[a-z][A-Za-z0-9]*")


def error_shape_problem(response: httpx.Response) -> str | None:
    """What makes an error response break the contract's error shape, or None if it keeps it."""
    try:
        body = response.json()
    except ValueError:
        return "the body is not JSON"
    if not isinstance(body, dict) or set(body) != {"errors"} or not isinstance(body["errors"], list):
        return 'the body is not {"errors": [...]}'
    if not body["errors"]:
        return "no error entry"
    for entry in body["errors"]:
        if not isinstance(entry, dict) or not set(entry) <= {"message", "field"}:
            return f"an entry is not {{message, field?}}: {entry!r}"
        if not isinstance(entry.get("message"), str) or not entry["message"].strip():
            return f"an entry has no message: {entry!r}"
        if "field" in entry and not (isinstance(entry["field"], str) and _CAMEL_CASE.fullmatch(entry["field"])):
            return f"a field is not a camelCase name: {entry!r}"
    if response.status_code in (429, 503) and not response.headers.get("Retry-After", "").isdigit():
        return "no Retry-After in seconds"
    return None


def _request_kwargs(case: Any, headers: dict[str, str]) -> dict[str, Any]:
    """The case as arguments for httpx.AsyncClient.request (schemathesis serializes it for requests)."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
    request: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": kwargs.get("headers") or {},
        "params": kwargs.get("params") or None,
    }
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        request["content"] = data.encode() if isinstance(data, str) else data
    return request


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    examples: int,
    *,
    path_parameters: dict[str, str] | None,
    seed_value: int,
    send: Any,
    headers: dict[str, str],
    run: FuzzRun,
) -> int:
    """Send up to `examples` generated cases of one operation, check each response; return how many were made."""
    made = 0

    @seed(seed_value)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def check(case: Any) -> None:
        nonlocal made
        made += 1
        try:
            request = _request_kwargs(case, headers)
            response: httpx.Response = send(request)
        except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError):
            # A header or URL no HTTP client can put on the wire never reaches a server.
            run.unsendable += 1
            return
        run.sent[operation.label] += 1
        run.statuses[response.status_code] += 1
        if response.status_code >= 400 and (problem := error_shape_problem(response)):
            key = f"{operation.label} {response.status_code} error shape"
            run.failures.setdefault(key, f"{request}\n{response.status_code} {response.text[:500]}\n{problem}"[:3000])
        try:
            case.validate_response(response, checks=CHECKS, headers=request["headers"])
        except BaseExceptionGroup as exc:  # schemathesis' FailureGroup: one entry per failed check
            key = f"{operation.label} {response.status_code} {type(exc).__name__}"
            run.failures.setdefault(key, f"{request}\n{response.status_code} {response.text[:500]}\n{exc}"[:3000])

    try:
        check()
    except Unsatisfiable:
        # No invalid input exists for an operation without parameters or body (signout, for one).
        run.exhausted.append(f"{operation.label} ({mode.value})")
    return made


Slot = tuple[Any, GenerationMode, dict[str, str] | None]


def _fuzz_service(
    operations: list[Any], pins: dict[str, dict[str, str]], *, send: Any, headers: dict[str, str], run: FuzzRun
) -> None:
    """Spread CASES_PER_SERVICE over every (operation, mode), in rounds with a new seed each.

    An operation whose path names a resource also gets valid cases aimed at a real one of the user's (its pins), so
    the fuzz reaches past 404 into the update, read and cancel paths and their response bodies. Operations with few
    distinct inputs (no parameters) run out early; what they leave goes to the others in the next round, until the
    budget is spent or every operation has run out.
    """
    open_slots: list[Slot] = [(operation, mode, None) for operation in operations for mode in MODES]
    open_slots += [(op, GenerationMode.POSITIVE, pins[op.label]) for op in operations if op.label in pins]
    round_number = 0
    while open_slots and run.total < CASES_PER_SERVICE:
        still_open = []
        for index, (operation, mode, pinned) in enumerate(open_slots):
            remaining = CASES_PER_SERVICE - run.total
            if remaining <= 0:
                break
            examples = math.ceil(remaining / (len(open_slots) - index))
            made = _fuzz_operation(
                operation,
                mode,
                examples,
                path_parameters=pinned,
                seed_value=SEED + round_number,
                send=send,
                headers=headers,
                run=run,
            )
            if made >= examples:
                still_open.append((operation, mode, pinned))
        open_slots = still_open
        round_number += 1


async def _pins(name: str, service: RunningService, user: TestUser) -> dict[str, dict[str, str]]:
    """Real resources of the user for the operations whose path names one: a ticket, an order."""
    if name == "tickets":
        created = await service.client.post("/api/tickets", json={"title": "Fuzz", "price": 10}, headers=user.headers)
        assert created.status_code == 201, created.text
        ticket = {"id": created.json()["id"]}
        return {"GET /api/tickets/{id}": ticket, "PUT /api/tickets/{id}": ticket}
    if name == "orders":
        # orders learns tickets from ticket.created; putting one in its replica directly stands for that here.
        ticket_id = uuid.uuid4()
        async with service.sessionmaker() as session, session.begin():
            session.add(orders_models.Ticket(id=ticket_id, title="Fuzz", price=Decimal(10), version=0))
        placed = await service.client.post("/api/orders", json={"ticketId": str(ticket_id)}, headers=user.headers)
        assert placed.status_code == 201, placed.text
        order = {"order_id": placed.json()["id"]}
        return {"GET /api/orders/{order_id}": order, "DELETE /api/orders/{order_id}": order}
    return {}


def _cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id at its lowest cost for the auth fuzz: what is fuzzed is the API, and a few hundred sign-ups and
    sign-ins at the production cost would take minutes. The hash is still Argon2id, verified the same way."""
    from argon2 import PasswordHasher

    from ticketing_auth import service as auth_service

    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    monkeypatch.setattr(auth_service, "_hasher", cheap)
    monkeypatch.setattr(auth_service, "_DUMMY_HASH", cheap.hash("not-a-real-password"))


def _load(name: str) -> tuple[Any, Any]:
    app_module = importlib.import_module(f"ticketing_{name}.app")
    settings_module = importlib.import_module(f"ticketing_{name}.settings")
    return app_module.create_app, settings_module.Settings


@pytest.mark.parametrize("name", SERVICES)
async def test_every_documented_operation_answers_without_a_server_error_and_as_its_spec_says(
    name: str, start_service: ServiceStarter, monkeypatch: pytest.MonkeyPatch
) -> None:
    if name == "auth":
        _cheap_password_hashing(monkeypatch)
    create_app, settings_cls = _load(name)
    service = await start_service(create_app, settings_cls, f"ticketing_{name}")
    schema = schemathesis.openapi.from_dict(service.app.openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, f"{name} documents no operations in its OpenAPI spec"

    user = make_user()
    pins = await _pins(name, service, user)
    loop = asyncio.get_running_loop()

    def send(request: dict[str, Any]) -> httpx.Response:
        return asyncio.run_coroutine_threadsafe(service.client.request(**request), loop).result(timeout=60)

    run = FuzzRun()

    started = time.monotonic()
    await asyncio.to_thread(_fuzz_service, operations, pins, send=send, headers=user.headers, run=run)
    elapsed = time.monotonic() - started
    print(
        f"\nfuzz {name} (seed {SEED}): {run.total} cases in {elapsed:.1f}s, by operation {dict(run.sent)}, "
        f"statuses {dict(sorted(run.statuses.items()))}, unsendable {run.unsendable}, "
        f"no case possible for {run.exhausted}"
    )
    assert not run.failures, "\n\n".join(f"{key}\n{detail}" for key, detail in run.failures.items())
    assert run.total >= CASES_PER_SERVICE


@pytest.mark.parametrize(
    ("status", "body", "headers", "wrong"),
    [
        (400, {"errors": [{"message": "Title is required", "field": "title"}]}, {}, False),
        (400, {"detail": "Not Found"}, {}, True),
        (400, {"errors": [{"message": "x", "field": "ticket_id"}]}, {}, True),
        (400, {"errors": [{"msg": "x"}]}, {}, True),
        (400, {"errors": []}, {}, True),
        (429, {"errors": [{"message": "Too many"}]}, {}, True),
        (429, {"errors": [{"message": "Too many"}]}, {"Retry-After": "30"}, False),
    ],
)
def test_the_error_shape_check_tells_the_contracts_shape_from_others(status, body, headers, wrong) -> None:
    response = httpx.Response(status, json=body, headers=headers)
    assert (error_shape_problem(response) is not None) is wrong


# Hostile event payloads: any JSON at all, not JSON at all, and order events with one field made wrong.
_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
_any_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_wrong_values = (
    _any_json
    | st.sampled_from(["", "not-a-uuid", "2026-13-45T25:61:00Z", "NaN", "\x00", "' OR 1=1 --", "\u202e"])
    | st.integers(min_value=2**63, max_value=2**200)  # beyond any database integer
    | st.integers(max_value=-1)
)


def _order_created_body() -> dict[str, Any]:
    return json.loads(
        OrderCreated(
            id=uuid.uuid4(),
            version=0,
            status=OrderStatus.CREATED,
            user_id=uuid.uuid4(),
            expires_at=datetime.now(UTC) + timedelta(hours=1),
            ticket=OrderTicket(id=uuid.uuid4(), price=Decimal("10.00")),
        ).to_bytes()
    )


def _order_cancelled_body() -> dict[str, Any]:
    return json.loads(OrderCancelled(id=uuid.uuid4(), version=1, ticket=TicketRef(id=uuid.uuid4())).to_bytes())


@st.composite
def _one_field_wrong(draw: st.DrawFn, make_body: Callable[[], dict[str, Any]]) -> bytes:
    """A valid event body with one field (possibly nested) replaced by a wrong value or removed."""
    body = make_body()
    target = body
    key = draw(st.sampled_from(sorted(body)))
    if isinstance(body[key], dict) and draw(st.booleans()):
        target = body[key]
        key = draw(st.sampled_from(sorted(target)))
    if draw(st.booleans()):
        del target[key]
    else:
        target[key] = draw(_wrong_values)
    return json.dumps(body).encode()


def _hostile_payloads(subject: str) -> st.SearchStrategy[bytes]:
    make_body = _order_created_body if subject == "order.created" else _order_cancelled_body
    return (
        _one_field_wrong(make_body) | _any_json.map(lambda value: json.dumps(value).encode()) | st.binary(max_size=64)
    )


def _generate_hostile(count: int) -> list[tuple[str, bytes]]:
    """`count` (subject, payload) pairs the events' own models reject, from a fixed seed."""
    cases: list[tuple[str, bytes]] = []
    models = {"order.created": OrderCreated, "order.cancelled": OrderCancelled}

    @seed(SEED)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        st.sampled_from(sorted(models)).flatmap(lambda subject: st.tuples(st.just(subject), _hostile_payloads(subject)))
    )
    def collect(case: tuple[str, bytes]) -> None:
        subject, payload = case
        try:
            models[subject].model_validate_json(payload)
        except ValidationError:
            cases.append(case)
            return
        assume(False)  # a payload the contract accepts is not hostile; the other tests cover those

    collect()
    return cases


async def test_expiration_dead_letters_every_hostile_event_payload_and_goes_on(
    start_service: ServiceStarter, nats_client: NATS, events: EventCapture
) -> None:
    from ticketing_expiration.app import create_app
    from ticketing_expiration.models import ExpirationJob
    from ticketing_expiration.settings import Settings

    service = await start_service(create_app, Settings, "ticketing_expiration")
    durables = {listener.subject: listener.durable for listener in service.runtime.listeners}
    hostile = await asyncio.to_thread(_generate_hostile, EVENT_CASES)
    js = nats_client.jetstream()
    sent: dict[str, set[str]] = {subject: set() for subject in durables}
    # A real order before, among and after the hostile ones: the service must schedule and fire them all.
    good = [
        OrderCreated(
            id=uuid.uuid4(),
            version=0,
            status=OrderStatus.CREATED,
            user_id=uuid.uuid4(),
            expires_at=datetime.now(UTC) + timedelta(seconds=1 + i),
            ticket=OrderTicket(id=uuid.uuid4(), price=Decimal("10.00")),
        )
        for i in range(3)
    ]
    positions = {0: good[0], len(hostile) // 2: good[1], len(hostile): good[2]}
    for i in range(len(hostile) + 1):
        if i in positions:
            event = positions[i]
            await js.publish(event.subject, event.to_bytes(), headers={"Nats-Msg-Id": str(event.event_id)})
        if i < len(hostile):
            subject, payload = hostile[i]
            message_id = f"hostile-{i}"
            sent[subject].add(message_id)
            await js.publish(subject, payload, headers={"Nats-Msg-Id": message_id})

    async def dead_letters() -> dict[str, set[str]]:
        async with service.sessionmaker() as session:
            rows = (await session.execute(select(DeadLetter.consumer, DeadLetter.message_id))).all()
        found: dict[str, set[str]] = {durable: set() for durable in durables.values()}
        for consumer, message_id in rows:
            found.setdefault(consumer, set()).add(message_id)
        return found

    expected = {durables[subject]: ids for subject, ids in sent.items()}

    async def all_dead_lettered() -> bool:
        return await dead_letters() == expected

    await eventually(all_dead_lettered, timeout=60)
    fired = await events.wait_for("expiration.complete", len(good), timeout=30)
    assert sorted(body["orderId"] for body in fired) == sorted(str(event.id) for event in good)
    async with service.sessionmaker() as session:
        jobs = set((await session.execute(select(ExpirationJob.order_id))).scalars())
        reasons = list((await session.execute(select(DeadLetter.reason))).scalars())
    # No hostile payload became a job; each was refused as invalid on its first delivery, not after retries.
    assert jobs == {event.id for event in good}
    assert all(reason.startswith("invalid payload") for reason in reasons), Counter(r[:40] for r in reasons)
    ready = await service.client.get("/readyz")
    assert ready.status_code == 200
    print(
        f"\nfuzz expiration events (seed {SEED}): {len(hostile)} hostile payloads, all dead-lettered; "
        f"by subject { ({s: len(ids) for s, ids in sent.items()}) }"
    )
