"""skaffold.yaml matches the source layout: its artifacts build from the repository root with each service's
Dockerfile, and its sync rules land edited modules where the dev pods import them from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conftest import K8s, Manifests

REPO = Path(__file__).resolve().parents[2]


def artifact(skaffold: dict[str, Any], service: str) -> dict[str, Any]:
    """The artifact that builds a service's image."""
    found = [a for a in skaffold["build"]["artifacts"] if a["image"] == f"ticketing/{service}"]
    assert len(found) == 1, f"skaffold.yaml needs exactly one artifact for {service}"
    return found[0]


def synced_files(rule: dict[str, Any], context: Path) -> list[Path]:
    """The files of the build context that a manual sync rule copies (`*` stops at a slash, as in skaffold)."""
    assert "**" not in rule["src"], "keep sync globs to one level, so that migrations stay out of them"
    return sorted(p for p in context.glob(rule["src"]) if p.is_file())


def test_skaffold_uses_a_current_schema_and_deploys_the_dev_overlay(skaffold: dict[str, Any]) -> None:
    assert skaffold["apiVersion"].startswith("skaffold/v4beta")
    assert int(skaffold["apiVersion"].removeprefix("skaffold/v4beta")) >= 11
    assert skaffold["kind"] == "Config"
    assert skaffold["manifests"]["kustomize"]["paths"] == ["infra/k8s/overlays/dev"]
    (prod,) = [p for p in skaffold["profiles"] if p["name"] == "prod"]
    assert prod["manifests"]["kustomize"]["paths"] == ["infra/k8s/overlays/prod"]
    for profile in (skaffold, prod):
        for path in profile["manifests"]["kustomize"]["paths"]:
            assert (REPO / path / "kustomization.yaml").exists()


def test_skaffold_builds_one_image_per_service_and_nothing_else(skaffold: dict[str, Any], k8s: type[K8s]) -> None:
    assert sorted(a["image"] for a in skaffold["build"]["artifacts"]) == sorted(f"ticketing/{s}" for s in k8s.SERVICES)


def test_every_artifact_builds_from_the_repository_root_with_its_service_dockerfile(
    skaffold: dict[str, Any], service: str, k8s: type[K8s]
) -> None:
    built = artifact(skaffold, service)
    assert (REPO / built.get("context", ".")).resolve() == REPO
    dockerfile = built["docker"]["dockerfile"]
    assert dockerfile == f"services/{service}/Dockerfile"
    assert k8s.dockerfile(service).is_file()


def test_the_images_skaffold_builds_are_the_images_the_dev_manifests_run(
    skaffold: dict[str, Any], dev: Manifests, service: str, k8s: type[K8s]
) -> None:
    image = artifact(skaffold, service)["image"]
    for c in k8s.all_containers(dev.deployment(service)):
        assert c["image"].split(":")[0] == image, c["name"]


def test_sync_rules_land_the_service_and_common_modules_where_the_dev_pod_imports_them(
    skaffold: dict[str, Any], dev: Manifests, service: str, k8s: type[K8s]
) -> None:
    built = artifact(skaffold, service)
    context = REPO / built.get("context", ".")
    app = dev.app_container(service)
    import_root = k8s.env_of(app)["PYTHONPATH"]["value"]
    reload_dir = app["args"][app["args"].index("--reload-dir") + 1]
    writable = {m["mountPath"] for m in app["volumeMounts"]}
    packages = {}
    for rule in built["sync"]["manual"]:
        assert rule["dest"] == import_root == reload_dir
        assert rule["dest"] in writable, "sync needs a writable volume: the root filesystem is read-only"
        assert rule["src"].startswith(rule["strip"])
        files = synced_files(rule, context)
        assert files, f"{rule['src']} matches no file"
        for path in files:
            relative = str(path.relative_to(context)).removeprefix(rule["strip"])
            packages.setdefault(relative.split("/")[0], []).append(relative)
    assert set(packages) == {"ticketing_common", f"ticketing_{service}"}
    # What lands in the pod is the package layout: <dest>/ticketing_<svc>/app.py and so on.
    assert f"ticketing_{service}/app.py" in packages[f"ticketing_{service}"]
    assert "ticketing_common/app.py" in packages["ticketing_common"]
    # Migrations are not synced: an edit to them rebuilds the image, and the new pod's initContainer applies them.
    assert not any("migrations/" in f for files in packages.values() for f in files)


def test_skaffold_forwards_the_nats_monitoring_port(skaffold: dict[str, Any], dev: Manifests, k8s: type[K8s]) -> None:
    (forward,) = skaffold["portForward"]
    assert (forward["resourceType"], forward["resourceName"]) == ("service", "nats-srv")
    assert forward["namespace"] == k8s.NAMESPACE
    assert forward["port"] == forward["localPort"] == 8222
    ports = {p["port"] for p in dev.get("Service", "nats-srv")["spec"]["ports"]}
    assert 8222 in ports
