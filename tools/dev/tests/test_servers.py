"""The embedded servers' helpers."""

from __future__ import annotations

from ticketing_dev.servers import free_port


def test_free_port_never_hands_out_a_port_twice_before_anything_binds_it() -> None:
    # The dev runner picks NATS's port and every service's before any of them binds; a repeat made auth fail to bind.
    ports = [free_port() for _ in range(1000)]

    assert len(set(ports)) == len(ports)
