"""The event contract as documents: an AsyncAPI 3 description and a JSON Schema per payload, from the event models.

Generated, never written by hand: docs/asyncapi.yaml and docs/events/*.schema.json are these documents committed,
each service serves the AsyncAPI one beside its OpenAPI, and a test fails when the committed files and the models
disagree (`ticketing catalog` rewrites them).
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from ticketing_common.events import EVENT_TYPES, STREAMS, Event, stream_for
from ticketing_common.listener import durable_name

ASYNCAPI_VERSION = "3.0.0"
# The catalog's own version: raise it when an event's payload changes.
CATALOG_VERSION = "1.0.0"

_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

HEADERS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "Nats-Msg-Id": {
            "type": "string",
            "format": "uuid",
            "description": "The event's id. JetStream drops a second publish with the same id within the stream's "
            "duplicate window, and every consumer records it in its inbox, so it applies an event once.",
        },
        "X-Request-ID": {
            "type": "string",
            "pattern": "^[A-Za-z0-9._:/+=-]{1,128}$",
            "description": "The HTTP request that caused the event; consumers log it and carry it into the events "
            "they publish in turn.",
        },
    },
    "required": ["Nats-Msg-Id"],
}


def _channel_id(subject: str) -> str:
    return subject.replace(".", "-")


def _schemas(ref_template: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Each event's schema as a reference, and the shared definitions, in serialization mode: the bytes on the wire."""
    events = list(EVENT_TYPES.values())
    refs, top = models_json_schema(
        [(event, "serialization") for event in events], ref_template=ref_template, by_alias=True
    )
    return {event.subject: refs[(event, "serialization")] for event in events}, top.get("$defs", {})


def payload_schemas() -> dict[str, dict[str, Any]]:
    """One self-contained JSON Schema (draft 2020-12) per subject, for consumers in any language."""
    _, definitions = _schemas("#/$defs/{model}")
    documents: dict[str, dict[str, Any]] = {}
    for subject, event in EVENT_TYPES.items():
        root = dict(definitions[event.__name__])
        used = _referenced(root, definitions)
        document: dict[str, Any] = {"$schema": _SCHEMA_DIALECT, "$id": f"{subject}.schema.json", **root}
        if used:
            document["$defs"] = {name: definitions[name] for name in sorted(used)}
        documents[subject] = document
    return documents


def _referenced(schema: Any, definitions: dict[str, Any], found: set[str] | None = None) -> set[str]:
    """The definitions a schema reaches through `$ref`, transitively."""
    found = set() if found is None else found
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name not in found:
                found.add(name)
                _referenced(definitions[name], definitions, found)
        for value in schema.values():
            _referenced(value, definitions, found)
    elif isinstance(schema, list):
        for value in schema:
            _referenced(value, definitions, found)
    return found


def _message(event: type[Event]) -> dict[str, Any]:
    return {
        "name": event.__name__,
        "title": event.subject,
        "summary": (event.__doc__ or "").strip().splitlines()[0],
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/EventHeaders"},
        "payload": {"$ref": f"#/components/schemas/{event.__name__}"},
    }


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3 document of the bus: channels (subjects), messages, and who sends and receives each."""
    _, definitions = _schemas("#/components/schemas/{model}")
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for subject, event in EVENT_TYPES.items():
        channel = _channel_id(subject)
        name = event.__name__
        messages[name] = _message(event)
        channels[channel] = {
            "address": subject,
            "title": subject,
            "description": f"In the {stream_for(subject)} stream. Published by {event.publisher}; consumed by "
            f"{', '.join(event.consumers)}.",
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        message_ref = {"$ref": f"#/channels/{channel}/messages/{name}"}
        operations[f"{event.publisher}-publishes-{channel}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel}"},
            "title": f"{event.publisher} publishes {subject}",
            "summary": "Written to the publisher's transactional outbox with the change that caused it; the relay "
            "publishes it after commit and waits for JetStream's acknowledgement.",
            "tags": [{"name": event.publisher}],
            "messages": [dict(message_ref)],
        }
        for service in event.consumers:
            durable = durable_name(service, subject)
            operations[durable] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel}"},
                "title": f"{service} consumes {subject}",
                "summary": f"Durable pull consumer {durable}, which every {service} replica binds: deliver-all, "
                "explicit ack, applied once per event id, in version order.",
                "tags": [{"name": service}],
                "messages": [dict(message_ref)],
                "x-durable": durable,
                "x-stream": stream_for(subject),
            }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "ticketing events",
            "version": CATALOG_VERSION,
            "description": "The events the ticketing services exchange over NATS JetStream. A message body is the "
            "payload JSON itself (camelCase, no envelope); metadata travels in headers. Streams: "
            + "; ".join(f"{name} holds {', '.join(subjects)}" for name, subjects in STREAMS.items())
            + ".",
        },
        "defaultContentType": "application/json",
        "servers": {
            "cluster": {
                "host": "nats-srv:4222",
                "protocol": "nats",
                "description": "The NATS server inside the cluster (infra/k8s); the dev stack prints its own URL.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": {"EventHeaders": HEADERS_SCHEMA, **{k: definitions[k] for k in sorted(definitions)}},
        },
    }
