"""The prod overlay's nats-prod.conf, run by the real nats-server: TLS for clients, authorization, loopback monitor."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest

from ticketing_common import bus
from ticketing_dev.natsauth import NatsAuth
from ticketing_dev.servers import free_port, nats_server_binary
from ticketing_testing import eventually

REPO = Path(__file__).resolve().parents[2]
BASE_CONF = REPO / "infra" / "k8s" / "base" / "nats" / "nats.conf"
PROD_CONF = REPO / "infra" / "k8s" / "overlays" / "prod" / "nats-prod.conf"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(folder: Path, prefix: str = "") -> None:
    """A test CA and a server certificate for nats-srv and 127.0.0.1, as cert-manager's Secret would hold them.

    It serves both ends of a route, as the real one does: usable by a server and by a client (serverAuth, clientAuth).
    """
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{prefix}ca.key", "-out", f"{prefix}ca.crt",
             "-subj", f"/CN={prefix}test-ca", "-days", "1", cwd=folder)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{prefix}tls.key", "-out", f"{prefix}tls.csr",
             "-subj", "/CN=nats-srv", cwd=folder)  # fmt: skip
    (folder / f"{prefix}san.ext").write_text(
        "subjectAltName=DNS:nats-srv,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl("x509", "-req", "-in", f"{prefix}tls.csr", "-CA", f"{prefix}ca.crt", "-CAkey", f"{prefix}ca.key",
             "-CAcreateserial", "-out", f"{prefix}tls.crt", "-days", "1", "-extfile", f"{prefix}san.ext",
             cwd=folder)  # fmt: skip


def _varz(monitor: int, wait: float = 30.0, page: str = "varz") -> dict[str, Any]:
    """The server's /varz (or another monitoring page), once its monitor answers (the server is up)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/{page}", timeout=2) as response:
                varz: dict[str, Any] = json.load(response)
                return varz
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _listening(port: int, wait: float = 30.0) -> None:
    """Wait until something accepts TCP connections on the port (a server's listener is open)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


ROUTE = re.compile(r"nats-depl-(\d)\.nats-headless:6222")


def _node_conf(text: str, folder: Path, monitor: int, cluster_ports: list[int], index: int) -> str:
    """nats-prod.conf for node `index` of a cluster on this machine: only addresses and paths change.

    The Secret's mount point becomes the test's folder; the monitor, the cluster listener and the routes' stable names
    become free ports on 127.0.0.1 (the test certificate names 127.0.0.1, as the real one names the pods).
    """
    assert '"127.0.0.1:8222"' in text and '"0.0.0.0:6222"' in text
    text = text.replace("/etc/nats-tls/", f"{folder}/").replace('"127.0.0.1:8222"', f'"127.0.0.1:{monitor}"')
    text = text.replace('"0.0.0.0:6222"', f'"127.0.0.1:{cluster_ports[index]}"')
    return ROUTE.sub(lambda m: f"127.0.0.1:{cluster_ports[int(m.group(1))]}", text)


@dataclass
class ProdCluster:
    """Three nats-servers running the prod overlay's config as the StatefulSet's three pods do."""

    folder: Path
    client_ports: list[int]
    cluster_ports: list[int]
    monitors: list[int]
    auth: NatsAuth


@pytest.fixture
def prod_cluster(tmp_path: Path) -> Iterator[ProdCluster]:
    # Failed, never skipped: without openssl this run would not check the prod NATS config at all, and say so.
    assert shutil.which("openssl"), "openssl makes this test's CA: install it (Debian: apt-get install openssl)"
    _certificates(tmp_path)
    shutil.copy(BASE_CONF, tmp_path / "nats.conf")
    auth = NatsAuth.generate(tmp_path / "nats.conf")
    text = PROD_CONF.read_text()
    assert len(ROUTE.findall(text)) == 3
    cluster = ProdCluster(tmp_path, [free_port() for _ in range(3)], [free_port() for _ in range(3)],
                          [free_port() for _ in range(3)], auth)  # fmt: skip
    env = {**auth.server_env(), "PATH": "/usr/bin:/bin"}
    procs = []
    try:
        for i in range(3):
            conf = _node_conf(text, tmp_path, cluster.monitors[i], cluster.cluster_ports, i)
            (tmp_path / f"nats-prod-{i}.conf").write_text(conf)
            args = [str(nats_server_binary()), "-c", f"nats-prod-{i}.conf", "--name", f"nats-depl-{i}",
                    "-a", "127.0.0.1", "-p", str(cluster.client_ports[i]), "-js", "-sd", f"js-{i}"]  # fmt: skip
            procs.append(
                subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        for monitor in cluster.monitors:
            _varz(monitor)
        # The monitor answers before the route and client listeners are open; a busy machine widens that gap.
        for port in (*cluster.cluster_ports, *cluster.client_ports):
            _listening(port)
        yield cluster
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=15)


async def test_prod_nats_speaks_tls_to_a_service_that_verifies_it_with_the_ca(prod_cluster: ProdCluster) -> None:
    folder, port, monitor, auth = (
        prod_cluster.folder,
        prod_cluster.client_ports[0],
        prod_cluster.monitors[0],
        prod_cluster.auth,
    )
    connection = await bus.connect(
        f"tls://127.0.0.1:{port}",
        "prod-check",
        identity="tickets",
        nkey_seed=auth.seed("tickets"),
        tls_ca_file=str(folder / "ca.crt"),
        on_closed=None,
    )
    try:
        assert connection.is_connected
    finally:
        await connection.close()
    # The server demands TLS; a client that does not trust our CA cannot complete it, whatever its key.
    with pytest.raises(ssl.SSLCertVerificationError):
        await nats.connect(
            f"nats://127.0.0.1:{port}",
            nkeys_seed_str=auth.seed("tickets"),
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=2,
        )
    varz = await asyncio.to_thread(_varz, monitor)
    assert varz["http_host"] == "127.0.0.1" and varz["tls_required"] is True


async def test_prod_nats_servers_form_one_cluster_over_mutually_verified_tls_routes(prod_cluster: ProdCluster) -> None:
    async def routed_to_the_other_two() -> bool:
        for i, monitor in enumerate(prod_cluster.monitors):
            routez = await asyncio.to_thread(_varz, monitor, 5, "routez")
            peers = {route["remote_name"] for route in routez["routes"]}
            assert peers == {f"nats-depl-{j}" for j in range(3)} - {f"nats-depl-{i}"}, (i, peers)
        return True

    await eventually(routed_to_the_other_two, timeout=30)
    for monitor in prod_cluster.monitors:
        cluster = (await asyncio.to_thread(_varz, monitor))["cluster"]
        assert cluster["name"] == "ticketing"
        assert cluster["tls_required"] is True and cluster["tls_verify"] is True


def _join_as_a_route(port: int, ca_file: Path, client_cert: tuple[Path, Path] | None) -> bytes:
    """Speak to a cluster port as a route would: TLS first (trusting ca_file, presenting client_cert if given), then
    CONNECT and PING; return what came back until the server closed or went quiet (or the TLS error's name)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    if client_cert is not None:
        context.load_cert_chain(*map(str, client_cert))
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b'CONNECT {"verbose":false,"pedantic":false,"tls_required":true}\r\nPING\r\n')
                while b"INFO" not in received and (chunk := tls.recv(4096)):
                    received += chunk
        except (ssl.SSLError, ConnectionResetError) as error:
            received += type(error).__name__.encode()
    return received


@pytest.mark.parametrize("certificate", ["none", "another CA's", "the CA's"])
async def test_a_peer_without_a_certificate_from_the_ca_cannot_join_the_cluster(
    prod_cluster: ProdCluster, certificate: str
) -> None:
    folder = prod_cluster.folder
    client_cert = None
    if certificate == "another CA's":
        _certificates(folder, prefix="rogue-")
        client_cert = (folder / "rogue-tls.crt", folder / "rogue-tls.key")
    elif certificate == "the CA's":
        client_cert = (folder / "tls.crt", folder / "tls.key")
    answer = await asyncio.to_thread(_join_as_a_route, prod_cluster.cluster_ports[0], folder / "ca.crt", client_cert)
    if certificate == "the CA's":
        assert b"INFO" in answer, answer  # the control: the same handshake with the CA's certificate is answered
    else:
        # The server ends the connection in the handshake: no INFO, no route.
        assert b"INFO" not in answer and b"SSLError" in answer, answer
