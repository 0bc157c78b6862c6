"""The container harness (infra/containers/harness.py) reads the rendered overlays as the kubelet would, offline:
every pod, alias, environment and docker argument it would use, without an engine. `make test-containers` runs it."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import K8s, Manifests

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def harness() -> ModuleType:
    """infra/containers/harness.py, imported by path (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("container_harness", REPO / "infra" / "containers" / "harness.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def stack_of(harness: ModuleType, manifests: Manifests) -> Any:
    """The harness's view of an overlay, with a stand-in image for the images it is told to substitute."""
    return harness.Stack(
        manifests.objects, image_map={}, pause_image="pause", env_overrides={("orders-depl", "app"): {"X": "1"}}
    )


def test_expand_follows_kubernetes_variable_references(harness: ModuleType) -> None:
    env = {"USER": "ann", "PASSWORD": "hex"}
    assert harness.expand("postgresql://$(USER):$(PASSWORD)@db/$(MISSING)", env) == "postgresql://ann:hex@db/$(MISSING)"
    assert harness.expand("$$(USER)", env) == "$(USER)"


def test_quantities_become_docker_limits(harness: ModuleType) -> None:
    assert harness.memory_bytes("384Mi") == 384 * 2**20
    assert harness.memory_bytes("1Gi") == 2**30
    assert harness.cpus("500m") == "0.5"
    assert harness.cpus("1") == "1"


def test_every_service_pod_is_reachable_under_its_service_names(
    harness: ModuleType, manifests: Manifests, k8s: type[K8s]
) -> None:
    stack = stack_of(harness, manifests)
    aliases = {alias for pod in stack.pods for alias in pod.aliases}
    for service in manifests.all("Service"):
        if service["spec"].get("selector"):
            assert service["metadata"]["name"] in aliases
    replicas = sum(w["spec"].get("replicas", 1) for w in manifests.workloads())
    assert len(stack.pods) == replicas


def test_every_container_gets_its_manifest_environment_user_and_read_only_root(
    harness: ModuleType, dev: Manifests, k8s: type[K8s]
) -> None:
    stack = stack_of(harness, dev)
    stack._image_user = lambda image: "10001"  # no engine offline
    for pod in stack.pods:
        for container in [*pod.spec.get("initContainers", []), *pod.spec["containers"]]:
            pod.volumes = {v["name"]: v["name"] for v in pod.spec.get("volumes", [])} | {
                t["metadata"]["name"]: "claim" for t in pod.workload["spec"].get("volumeClaimTemplates", [])
            }
            args = stack._run_args(pod, container, detach=True, restart="always")
            assert "--read-only" in args
            assert args[args.index("--cap-drop") : args.index("--cap-drop") + 2] == ["--cap-drop", "ALL"]
            assert "--user" in args and not args[args.index("--user") + 1].startswith("0:")
            env = stack.environment(pod, container)
            assert all(f"{name}={value}" in args for name, value in env.items())
            service = pod.labels.get("app.kubernetes.io/name")
            if pod.workload["kind"] == "Deployment" and container["name"] == "app" and service in k8s.SERVICES:
                if service in k8s.WEB_SERVICES:  # the web client: no database, no NATS, no JWT key; the API's address
                    assert "DATABASE_URL" not in env and "JWT_KEY" not in env
                    continue
                assert env["DATABASE_URL"].startswith(f"postgresql://{service}:")
                assert "$(" not in env["DATABASE_URL"]
                assert env["NATS_CLIENT_ID"] == pod.name
                assert env["JWT_KEY"]
    orders = next(p for p in stack.pods if p.name.startswith("orders-depl"))
    assert stack.environment(orders, orders.spec["containers"][0])["X"] == "1", "test-only overrides apply"


def test_only_optional_or_documented_secrets_are_made_by_the_harness(harness: ModuleType, dev: Manifests) -> None:
    stack = stack_of(harness, dev)
    generated = {s["metadata"]["name"] for s in dev.all("Secret")}
    assert set(stack.secrets) - generated == {"jwt-secret"}, "dev's stripe-secret is optional and stays absent"


def test_the_harness_nats_certificate_serves_clients_and_every_cluster_route_of_prod(
    harness: ModuleType, tmp_path: Path
) -> None:
    """`make containers OVERLAY=prod` forms the NATS cluster only if nats-tls names each route's host and may be
    presented as a client's certificate (routes verify both ways); checked against nats-prod.conf, offline."""
    assert shutil.which("openssl"), "openssl reads the certificate here: install it (Debian: apt-get install openssl)"
    secret = harness.user_secret("nats-tls")
    (tmp_path / "tls.crt").write_text(secret["tls.crt"])
    (tmp_path / "ca.crt").write_text(secret["ca.crt"])
    text = subprocess.run(
        ["openssl", "x509", "-in", "tls.crt", "-noout", "-ext", "subjectAltName,extendedKeyUsage"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    names = set(re.findall(r"DNS:([\w.-]+)", text))
    conf = (REPO / "infra/k8s/overlays/prod/nats-prod.conf").read_text()
    route_hosts = set(re.findall(r"nats://([\w.-]+):6222", conf))
    assert len(route_hosts) == 3
    assert names >= route_hosts | {"nats-srv"}
    assert "TLS Web Client Authentication" in text and "TLS Web Server Authentication" in text
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", "ca.crt", "tls.crt"], cwd=tmp_path, capture_output=True, text=True
    )
    assert verified.returncode == 0, verified.stderr
