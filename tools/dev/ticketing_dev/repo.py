"""Where things are: the checkout, its services, the Ingress the gateway routes by, and the stack's state folder."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ticketing_dev.errors import DevStackError
from ticketing_dev.servers import world_traversable


def repo_root() -> Path:
    """The checkout: TICKETING_ROOT, else the workspace that holds this (editable) package."""
    if env := os.environ.get("TICKETING_ROOT"):
        return Path(env).resolve()
    here = Path(__file__).resolve().parents[3]  # tools/dev/ticketing_dev/repo.py
    if (here / "services").is_dir():
        return here
    for candidate in [Path.cwd(), *Path.cwd().parents]:
        if (candidate / "services").is_dir() and (candidate / "pyproject.toml").is_file():
            return candidate
    raise DevStackError("cannot find the ticketing checkout; run from it or set TICKETING_ROOT")


def ingress_manifest(root: Path) -> Path:
    """The Ingress the gateway routes by."""
    return root / "infra" / "k8s" / "base" / "ingress.yaml"


def default_state_dir(root: Path | None = None) -> Path:
    """TICKETING_STATE_DIR, else <repo>/.state; as root with a private checkout, a folder Postgres can reach."""
    if env := os.environ.get("TICKETING_STATE_DIR"):
        return Path(env).resolve()
    root = root or repo_root()
    if os.geteuid() != 0 or world_traversable(root):
        return root / ".state"
    # Postgres runs as an unprivileged system user when we are root; it must traverse to its data directory.
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:10]
    return Path("/var/tmp") / f"ticketing-dev-{digest}"


@dataclass(frozen=True)
class ServiceInfo:
    """A service found under services/: its name, package, whether it owns a database, and where the ingress
    routes to it (an /api/ prefix, or a page path such as the web client's `/`)."""

    name: str
    package: str
    directory: Path
    api_prefix: str | None = None
    web_path: str | None = None
    has_database: bool = True

    @property
    def backend(self) -> str:
        """The Kubernetes Service name the ingress routes to."""
        return f"{self.name}-srv"


def discover_services(root: Path) -> list[ServiceInfo]:
    """Every services/<name>/ folder holding a ticketing_<name> package with an app module.

    A package without migrations owns no database (the web client): it gets none, and nothing to migrate.
    """
    from ticketing_dev.gateway import load_routes

    prefixes: dict[str, str] = {}
    manifest = ingress_manifest(root)
    if manifest.is_file():
        for route in sorted(load_routes(manifest), key=lambda r: len(r.path)):
            prefixes.setdefault(route.service, route.path.rstrip("/") or "/")
    found = []
    services_dir = root / "services"
    for directory in sorted(services_dir.iterdir() if services_dir.is_dir() else []):
        package = f"ticketing_{directory.name}"
        if (directory / package / "app.py").is_file():
            path = prefixes.get(f"{directory.name}-srv")
            api = path is not None and path.startswith("/api/")
            found.append(
                ServiceInfo(
                    directory.name,
                    package,
                    directory,
                    api_prefix=path if api else None,
                    web_path=None if api else path,
                    has_database=(directory / package / "migrations").is_dir(),
                )
            )
    return found
