"""What an image runs is runtime only: no dev or test tool in any service image's pins, none imported by
`ticketing_common`, and `ticketing_common` declaring exactly the distributions it imports."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from ticketing_testing.images import DEV_AND_TEST_DISTRIBUTIONS, DEV_AND_TEST_MODULES

if TYPE_CHECKING:
    from conftest import ImageEnvironments

REPO = Path(__file__).resolve().parents[2]
COMMON = REPO / "common"
# Declared without being imported, and why.
RUN_NOT_IMPORTED = {"uvicorn": "the server every image runs: `uvicorn --factory ticketing_<svc>.app:create_app`"}

# Imports every module of the installed ticketing_common, then names the modules it loaded.
IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys
import ticketing_common
names = [m.name for m in pkgutil.walk_packages(ticketing_common.__path__, "ticketing_common.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "loaded": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def canonical(name: str) -> str:
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def image_distributions(images: ImageEnvironments, service: str) -> set[str]:
    """The distributions a service image installs: its lock subset, as the Dockerfile computes it."""
    return {canonical(line.split("==")[0]) for line in images.lock(service).splitlines() if re.match(r"[A-Za-z]", line)}


def test_no_image_installs_a_dev_or_test_tool(service: str, images: ImageEnvironments) -> None:
    installed = image_distributions(images, service)

    assert {"fastapi", "uvicorn", "sqlalchemy", "nats-py"} <= installed
    assert not installed & DEV_AND_TEST_DISTRIBUTIONS


def loaded_by_importing_every_module(python: Path | str, **kwargs: object) -> set[str]:
    """The top-level modules loaded once every ticketing_common module is imported by that interpreter."""
    result = subprocess.run(
        [str(python), "-c", IMPORT_EVERYTHING], capture_output=True, text=True, check=False, timeout=120, **kwargs
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert {"ticketing_common.app", "ticketing_common.outbox"} <= set(report["imported"])
    return set(report["loaded"])


def test_the_runtime_library_imports_no_dev_or_test_module_even_where_they_are_installed() -> None:
    # The workspace venv holds every dev and test tool, so an import of one would succeed here: only sys.modules
    # can tell.
    assert not loaded_by_importing_every_module(sys.executable, cwd=REPO) & DEV_AND_TEST_MODULES


def test_the_installed_runtime_library_imports_in_an_image_without_them(
    service: str, images: ImageEnvironments
) -> None:
    python = images.python(service)
    env = images.base_env() | {"PYTHONPATH": str(COMMON)}
    assert not loaded_by_importing_every_module(python, cwd=images.root, env=env) & DEV_AND_TEST_MODULES


def third_party_imports(package: Path) -> set[str]:
    """The top-level names of every module the package's sources import (lazy imports included), minus the stdlib
    and the package itself."""
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", package.name}


def declared_dependencies(pyproject: Path) -> set[str]:
    """The distributions a pyproject declares, without versions, extras or markers."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return {canonical(re.split(r"[<>=!~\[; ]", d)[0]) for d in project["dependencies"]}


def test_the_runtime_library_declares_exactly_the_distributions_it_imports() -> None:
    by_module = importlib.metadata.packages_distributions()
    imported = {canonical(by_module[name][0]) for name in third_party_imports(COMMON / "ticketing_common")}
    declared = declared_dependencies(COMMON / "pyproject.toml")

    assert imported - declared == set(), "imported but not declared"
    assert declared - imported == set(RUN_NOT_IMPORTED), "declared but never imported"


def test_the_lock_names_every_workspace_member_by_a_relative_path() -> None:
    editables = [line for line in (REPO / "requirements.lock").read_text().splitlines() if line.startswith("-e ")]
    workspace = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]
    members = {f"-e ./{p.parent.relative_to(REPO)}" for glob in workspace for p in REPO.glob(f"{glob}/pyproject.toml")}

    assert set(editables) == members
