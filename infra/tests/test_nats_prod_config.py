"""The prod overlay's nats-prod.conf, run by the real nats-server: TLS for clients, authorization, loopback monitor."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import nats
import pytest

from ticketing_common import bus
from ticketing_dev.natsauth import NatsAuth
from ticketing_dev.servers import free_port, nats_server_binary

REPO = Path(__file__).resolve().parents[2]
BASE_CONF = REPO / "infra" / "k8s" / "base" / "nats" / "nats.conf"
PROD_CONF = REPO / "infra" / "k8s" / "overlays" / "prod" / "nats-prod.conf"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(folder: Path) -> None:
    """A test CA and a server certificate for nats-srv and 127.0.0.1, as cert-manager's Secret would hold them."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-subj",
             "/CN=test-ca", "-days", "1", cwd=folder)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=nats-srv",
             cwd=folder)  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=DNS:nats-srv,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
             "tls.crt", "-days", "1", "-extfile", "san.ext", cwd=folder)  # fmt: skip


def _varz(monitor: int, wait: float = 30.0) -> dict[str, object]:
    """The server's /varz, once its monitor answers (the server is up)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/varz", timeout=2) as response:
                varz: dict[str, object] = json.load(response)
                return varz
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def prod_server(tmp_path: Path):
    # Failed, never skipped: without openssl this run would not check the prod NATS config at all, and say so.
    assert shutil.which("openssl"), "openssl makes this test's CA: install it (Debian: apt-get install openssl)"
    _certificates(tmp_path)
    monitor = free_port()
    shutil.copy(BASE_CONF, tmp_path / "nats.conf")
    # Only the paths and the monitor's port change: the Secret's mount point, and a port free on this machine.
    text = PROD_CONF.read_text().replace("/etc/nats-tls/", f"{tmp_path}/")
    assert '"127.0.0.1:8222"' in text
    (tmp_path / "nats-prod.conf").write_text(text.replace('"127.0.0.1:8222"', f'"127.0.0.1:{monitor}"'))
    auth = NatsAuth.generate(tmp_path / "nats.conf")
    port = free_port()
    args = [str(nats_server_binary()), "-c", "nats-prod.conf", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", "js"]
    env = {**auth.server_env(), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _varz(monitor)
        yield tmp_path, port, monitor, auth
    finally:
        proc.terminate()
        proc.wait(timeout=15)


async def test_prod_nats_speaks_tls_to_a_service_that_verifies_it_with_the_ca(prod_server) -> None:
    folder, port, monitor, auth = prod_server
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
