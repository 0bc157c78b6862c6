"""Every image run.sh built: a non-root user, runtime packages only, and its size printed."""

from __future__ import annotations

import json

import pytest
from containerkit import SERVICES, docker

from ticketing_testing.images import DEV_AND_TEST_DISTRIBUTIONS, DEV_AND_TEST_MODULES

# Run inside the image: its installed distributions, and the top-level modules that importing every module of the
# installed ticketing_common loads.
INSPECT = """
import importlib, importlib.metadata, json, pkgutil, sys
import ticketing_common
for module in pkgutil.walk_packages(ticketing_common.__path__, "ticketing_common."):
    importlib.import_module(module.name)
print(json.dumps({
    "distributions": sorted(d.metadata["Name"].lower().replace("_", "-") for d in importlib.metadata.distributions()),
    "loaded": sorted({m.split(".")[0] for m in sys.modules}),
}))
"""


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_runs_as_a_non_root_user_with_runtime_packages_only(service: str) -> None:
    image = f"ticketing/{service}:0.1.0"
    assert docker("image", "inspect", "-f", "{{.Config.User}}", image) == "10001:10001"
    found = json.loads(
        docker("run", "--rm", "--read-only", "--network", "none", "--entrypoint", "python", image, "-c", INSPECT)
    )
    assert {"fastapi", "uvicorn", "sqlalchemy", "nats-py", "ticketing-common", f"ticketing-{service}"} <= set(
        found["distributions"]
    )
    assert not set(found["distributions"]) & DEV_AND_TEST_DISTRIBUTIONS
    assert not set(found["loaded"]) & DEV_AND_TEST_MODULES
    assert docker("run", "--rm", "--network", "none", "--entrypoint", "id", image, "-u") == "10001"
    size = int(docker("image", "inspect", "-f", "{{.Size}}", image))
    print(f"\n{image}: {size / 1e6:.0f} MB")


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_carries_no_ca_bundle_from_the_build(service: str) -> None:
    # The proxy's bundle reaches the build as a secret only: no layer of the image holds it.
    history = docker("image", "history", "--no-trunc", "--format", "{{.CreatedBy}}", f"ticketing/{service}:0.1.0")
    assert "ca-certificates.crt" not in history
    listing = docker("run", "--rm", "--network", "none", "--entrypoint", "ls", f"ticketing/{service}:0.1.0", "/run")
    assert "secrets" not in listing.split()
