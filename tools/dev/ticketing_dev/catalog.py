"""`ticketing catalog`: write the event catalog's documents into docs/, or say which ones are stale."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ticketing_common.catalog import asyncapi_document, payload_schemas

ASYNCAPI_PATH = Path("docs/asyncapi.yaml")
SCHEMAS_DIR = Path("docs/events")

_HEADER = (
    "# The event catalog, generated from ticketing_common.events by `ticketing catalog` (make catalog): do not edit.\n"
    "# Each service serves it as JSON at <its API prefix>/asyncapi.json; docs/events/ holds each payload's schema.\n"
)


def rendered_documents() -> dict[Path, str]:
    """Every catalog document, by its path in the checkout, as it should be committed."""
    documents = {ASYNCAPI_PATH: _HEADER + yaml.safe_dump(asyncapi_document(), sort_keys=False, width=120)}
    for subject, schema in payload_schemas().items():
        documents[SCHEMAS_DIR / f"{subject}.schema.json"] = json.dumps(schema, indent=2) + "\n"
    return documents


def stale_documents(root: Path) -> list[Path]:
    """The documents under root that differ from the models, and schema files that no subject has any more."""
    documents = rendered_documents()
    stale = [path for path, text in documents.items() if _read(root / path) != text]
    extra = sorted(p.relative_to(root) for p in (root / SCHEMAS_DIR).glob("*.schema.json"))
    return stale + [path for path in extra if path not in documents]


def write_documents(root: Path) -> list[Path]:
    """Rewrite the stale documents (and delete orphaned schemas); returns what changed."""
    changed = stale_documents(root)
    documents = rendered_documents()
    for path in changed:
        target = root / path
        if path in documents:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(documents[path])
        else:
            target.unlink()
    return changed


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
