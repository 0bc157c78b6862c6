"""Provisioning, under the provisioner identity: the catalog's streams and one service's durable consumers.

Services may use their durables but not create streams or consumers (infra/k8s/base/nats/nats.conf): a consumer's
config names the subject JetStream delivers to, and a stream's can rewrite subjects, so either would let a service
put words in another's mouth. Each Deployment runs `python -m ticketing_common.provision ticketing_<svc>` as an
initContainer with the provisioner's seed, before its app starts; `make dev` and the test harness call provision().
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Iterable
from typing import Any

from nats.js import JetStreamContext

from ticketing_common import bus
from ticketing_common.events import stream_for
from ticketing_common.listener import Listener

PROVISIONER = "provisioner"


def listener_types(package: str) -> list[type[Listener[Any]]]:
    """The Listener classes a service package declares (in `<package>.listeners`, else the package itself)."""
    try:
        module = importlib.import_module(f"{package}.listeners")
    except ModuleNotFoundError as exc:
        if exc.name != f"{package}.listeners":
            raise
        module = importlib.import_module(package)
    return [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, Listener) and cls.__module__ == module.__name__ and not inspect.isabstract(cls)
    ]


def service_name(package: str) -> str:
    """`ticketing_orders` -> `orders`: the name the durables and the bus identity carry."""
    return package.removeprefix("ticketing_")


async def provision(
    js: JetStreamContext,
    *,
    service: str,
    listeners: Iterable[type[Listener[Any]]],
    ack_wait: float | None = None,
    replicas: int = 1,
    max_age: float = 0,
) -> None:
    """Create or update every stream, then the service's durables with their declared config."""
    await bus.ensure_streams(js, replicas=replicas, max_age=max_age)
    for listener in listeners:
        await js.add_consumer(stream_for(listener.event_type.subject), listener.consumer_config_for(service, ack_wait))


async def _run(package: str) -> None:
    url = os.environ.get("NATS_URL", "")
    seed = os.environ.get("NATS_NKEY_SEED") or None
    ack_wait = os.environ.get("NATS_ACK_WAIT_SECONDS")
    connection = await bus.connect(
        url,
        f"provision-{service_name(package)}",
        identity=PROVISIONER,
        nkey_seed=seed,
        tls_ca_file=os.environ.get("NATS_TLS_CA_FILE") or None,
        on_closed=None,
    )
    try:
        await provision(
            connection.js,
            service=service_name(package),
            listeners=listener_types(package),
            ack_wait=float(ack_wait) if ack_wait else None,
            replicas=int(os.environ.get("NATS_STREAM_REPLICAS", "1")),
            max_age=float(os.environ.get("NATS_STREAM_MAX_AGE_SECONDS") or 0),
        )
    finally:
        await connection.close()


def main(argv: list[str] | None = None) -> None:
    """`python -m ticketing_common.provision PACKAGE`: streams and the package's durables, as the provisioner."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("package", help="the service package, e.g. ticketing_orders")
    args = parser.parse_args(argv)
    if not os.environ.get("NATS_URL"):
        print("configuration error: NATS_URL is missing", file=sys.stderr)
        raise SystemExit(2)
    asyncio.run(_run(args.package))


if __name__ == "__main__":
    main()
