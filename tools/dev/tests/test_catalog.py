"""The event catalog's committed documents: they match the models, and `ticketing catalog` finds and fixes drift."""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import jsonschema_rs
import pytest
import yaml
from typer.testing import CliRunner

from ticketing_common.catalog import asyncapi_document, payload_schemas
from ticketing_common.events import EVENT_TYPES, OrderCreated, OrderTicket, TicketUpdated
from ticketing_dev import cli
from ticketing_dev.catalog import ASYNCAPI_PATH, SCHEMAS_DIR, rendered_documents, stale_documents
from ticketing_dev.repo import repo_root


def test_the_committed_catalog_matches_the_event_models() -> None:
    assert stale_documents(repo_root()) == [], "run `make catalog` and commit docs/"


@pytest.fixture
def checkout_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout holding only the catalog's documents, which `ticketing` then works on."""
    (tmp_path / "services").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    shutil.copytree(repo_root() / "docs", tmp_path / "docs")
    monkeypatch.setenv("TICKETING_ROOT", str(tmp_path))
    return tmp_path


def test_check_names_a_drifted_document_and_a_stray_schema_and_the_generator_fixes_both(checkout_copy: Path) -> None:
    schema = checkout_copy / SCHEMAS_DIR / "order.created.schema.json"
    schema.write_text(schema.read_text().replace('"expiresAt"', '"expiry"'))
    (checkout_copy / SCHEMAS_DIR / "order.shipped.schema.json").write_text("{}")

    checked = CliRunner().invoke(cli.app, ["catalog", "--check"])
    assert checked.exit_code == 1
    assert "docs/events/order.created.schema.json" in checked.output
    assert "docs/events/order.shipped.schema.json" in checked.output

    assert CliRunner().invoke(cli.app, ["catalog"]).exit_code == 0
    assert CliRunner().invoke(cli.app, ["catalog", "--check"]).exit_code == 0
    assert not (checkout_copy / SCHEMAS_DIR / "order.shipped.schema.json").exists()
    assert stale_documents(checkout_copy) == []


def test_the_asyncapi_yaml_is_the_generated_document() -> None:
    assert yaml.safe_load(rendered_documents()[ASYNCAPI_PATH]) == asyncapi_document()


def test_every_subject_has_its_publisher_and_each_consumers_durable() -> None:
    document = asyncapi_document()
    assert document["asyncapi"].startswith("3.")
    for subject, event in EVENT_TYPES.items():
        channel = document["channels"][subject.replace(".", "-")]
        assert channel["address"] == subject
        operations = {
            op_id: op
            for op_id, op in document["operations"].items()
            if op["channel"]["$ref"] == f"#/channels/{subject.replace('.', '-')}"
        }
        senders = [op["tags"][0]["name"] for op in operations.values() if op["action"] == "send"]
        durables = sorted(op["x-durable"] for op in operations.values() if op["action"] == "receive")
        assert senders == [event.publisher]
        assert durables == sorted(f"{service}-{subject.replace('.', '-')}" for service in event.consumers)
    headers = document["components"]["schemas"]["EventHeaders"]["properties"]
    assert set(headers) == {"Nats-Msg-Id", "X-Request-ID"}


def test_every_reference_in_the_asyncapi_document_resolves() -> None:
    document = asyncapi_document()

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return own + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    found = refs(document)
    assert found
    for ref in found:
        target: object = document
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict) and part in target, ref
            target = target[part]


def test_the_payload_schemas_accept_what_a_service_publishes_and_refuse_a_broken_payload() -> None:
    schemas = payload_schemas()
    order = OrderCreated(
        id=uuid.uuid4(),
        version=0,
        status="created",
        user_id=uuid.uuid4(),
        expires_at=datetime.now(UTC),
        ticket=OrderTicket(id=uuid.uuid4(), price=Decimal("12.50")),
    )
    validator = jsonschema_rs.validator_for(schemas["order.created"], validate_formats=True)
    assert validator.is_valid(json.loads(order.to_bytes()))
    broken = json.loads(order.to_bytes())
    broken["ticket"]["price"] = "12.50"
    assert not validator.is_valid(broken)
    assert not validator.is_valid({**json.loads(order.to_bytes()), "status": "shipped"})
    updated = TicketUpdated(
        id=uuid.uuid4(), version=3, title="Show", price=Decimal(10), user_id=uuid.uuid4(), order_id=None
    )
    assert jsonschema_rs.validator_for(schemas["ticket.updated"]).is_valid(json.loads(updated.to_bytes()))
