"""A test harness, not a Kubernetes: it runs a rendered kustomize overlay on a Docker engine, wired as the kubelet
and cluster DNS would wire it, and serves the overlay's Ingress on a loopback port.

Nothing about the wiring is declared here a second time: every Deployment and StatefulSet of
`kubectl kustomize infra/k8s/overlays/<overlay>` becomes one pod per replica, where
- a pod is a small "pause" container holding the network namespace, reachable under the names of the Services
  that select it (and `<pod>.<governing service>` for StatefulSet pods), as cluster DNS would give it;
- its initContainers run first, in order, each to success; then its containers start with the restartPolicy;
- each container gets its image, command and args (with `$(VAR)` expanded), its env with ConfigMap, Secret,
  field and resource references resolved from the rendered objects, the securityContext's user, group, fsGroup,
  read-only root filesystem, dropped capabilities and no-new-privileges, its CPU and memory limits, and its
  emptyDir and PersistentVolumeClaim volumes (Docker volumes; fsGroup owns them, as the kubelet does);
- readiness is the manifest's own startup and readiness probes (httpGet, exec, tcpSocket), polled until they pass.

What it does not do is listed in the README: no API server, scheduler, ingress controller, NetworkPolicies,
liveness restarts, rolling updates or Service load balancing across replicas.

Images that cannot be pulled are substituted only through an explicit map (TICKETING_CONTAINERS_IMAGE_MAP,
`image=stand-in,...`), and Secrets that the README tells users to create (jwt-secret) are created as it says.

Usage: harness.py up [--overlay dev] [--port 8080] [--env WORKLOAD/CONTAINER/NAME=VALUE ...] [--ready-file PATH]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / ".containers"
LABEL = "ticketing.harness"
NETWORK = "ticketing-harness"
# What the README has users create by hand before `skaffold dev`; values made here as the README makes them.
USER_SECRETS = {"jwt-secret": lambda: {"JWT_KEY": secrets.token_hex(32)}}
CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9, "": 1}


class HarnessError(RuntimeError):
    """The overlay asks for something the harness cannot run, or a pod did not come up."""


def docker(*args: str, check: bool = True, timeout: float = 300) -> str:
    """Run the docker CLI (Debian's, on the engine DOCKER_HOST names) and return its stdout."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise HarnessError(f"docker {' '.join(args[:3])} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def render(overlay: str) -> list[dict[str, Any]]:
    """`kubectl kustomize` the overlay, with the project's pinned kubectl."""
    kubectl = REPO / ".venv" / "bin" / "kubectl"
    out = subprocess.run(
        [str(kubectl), "kustomize", str(REPO / "infra" / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity in bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?|)", str(quantity))
    if not match:
        raise HarnessError(f"unsupported memory quantity {quantity!r}")
    return int(float(match.group(1)) * MEMORY_UNITS[match.group(2)])


def cpus(quantity: str) -> str:
    """A Kubernetes CPU quantity as docker's --cpus."""
    match = CPU.fullmatch(str(quantity))
    if not match:
        raise HarnessError(f"unsupported cpu quantity {quantity!r}")
    value = float(match.group(1)) / (1000 if match.group(2) else 1)
    return f"{value:g}"


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, `$$` escapes, unknown references stay."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        text,
    )


@dataclass
class Pod:
    """One replica of a workload: its name, labels, spec, and the harness's containers for it."""

    name: str
    workload: dict[str, Any]
    labels: dict[str, str]
    spec: dict[str, Any]
    aliases: list[str] = field(default_factory=list)
    volumes: dict[str, str] = field(default_factory=dict)  # volume name -> docker volume
    address: str = ""

    @property
    def pause(self) -> str:
        """The container holding the pod's network namespace."""
        return self.name

    def container_name(self, container: str) -> str:
        """The docker name of one of the pod's containers."""
        return f"{self.name}_{container}"

    def ip(self) -> str:
        """The pod's address on the harness network (it keeps it across container restarts, as a pod does)."""
        if not self.address:
            template = f'{{{{(index .NetworkSettings.Networks "{NETWORK}").IPAddress}}}}'
            self.address = docker("inspect", "-f", template, self.pause)
        return self.address


class Stack:
    """The rendered overlay on the engine."""

    def __init__(
        self,
        objects: list[dict[str, Any]],
        *,
        image_map: dict[str, str],
        pause_image: str,
        env_overrides: dict[tuple[str, str], dict[str, str]],
    ) -> None:
        self.objects = objects
        self.image_map = image_map
        self.pause_image = pause_image
        self.env_overrides = env_overrides
        self.secrets = self._secrets()
        self.pods = self._pods()
        self.cancelled = threading.Event()

    def kind(self, kind: str) -> list[dict[str, Any]]:
        """Every rendered object of a kind."""
        return [o for o in self.objects if o["kind"] == kind]

    def _secrets(self) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        for secret in self.kind("Secret"):
            values = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
            values |= secret.get("stringData") or {}
            found[secret["metadata"]["name"]] = values
        for name, make in USER_SECRETS.items():
            found.setdefault(name, make())
        return found

    def _pods(self) -> list[Pod]:
        pods: list[Pod] = []
        # The stores first: Kubernetes starts all at once, and the services' initContainers wait for them anyway.
        for workload in self.kind("StatefulSet") + self.kind("Deployment"):
            for ordinal in range(workload["spec"].get("replicas", 1)):
                template = workload["spec"]["template"]
                pod = Pod(
                    name=f"{workload['metadata']['name']}-{ordinal}",
                    workload=workload,
                    labels=template["metadata"].get("labels", {}),
                    spec=template["spec"],
                )
                for service in self.kind("Service"):
                    selector = service["spec"].get("selector") or {}
                    if selector and all(pod.labels.get(k) == v for k, v in selector.items()):
                        self._check_ports(service, pod)
                        name, namespace = service["metadata"]["name"], service["metadata"].get("namespace", "default")
                        pod.aliases += [name, f"{name}.{namespace}", f"{name}.{namespace}.svc.cluster.local"]
                        if workload["kind"] == "StatefulSet" and workload["spec"].get("serviceName") == name:
                            pod.aliases.append(f"{pod.name}.{name}")
                pods.append(pod)
        return pods

    @staticmethod
    def _check_ports(service: dict[str, Any], pod: Pod) -> None:
        """A Service port reaches the same container port (the harness gives names, not a port-mapping proxy)."""
        by_name = {
            p["name"]: p["containerPort"] for c in pod.spec["containers"] for p in c.get("ports", []) if "name" in p
        }
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            target = by_name.get(target, target)
            if target != port["port"]:
                raise HarnessError(f"{service['metadata']['name']}: port {port['port']} -> {target} needs a remap")

    # -- start -----------------------------------------------------------------------------------------------------

    def up(self) -> None:
        """Create the network and every pod; return once every pod's probes pass."""
        docker("network", "create", "--label", LABEL, NETWORK)
        pool = ThreadPoolExecutor(max_workers=len(self.pods))
        try:
            for done in [pool.submit(self._start_pod, pod) for pod in self.pods]:
                done.result()
            for done in [pool.submit(self.wait_ready, pod) for pod in self.pods]:
                done.result()
        finally:
            # On Ctrl-C or a failed pod, the other pods' threads stop at their next step.
            self.cancelled.set()
            pool.shutdown(wait=True, cancel_futures=True)
            self.cancelled.clear()

    def _check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise HarnessError("cancelled")

    def _start_pod(self, pod: Pod) -> None:
        args = ["run", "-d", "--label", LABEL, "--name", pod.pause, "--hostname", pod.name, "--network", NETWORK]
        for alias in pod.aliases:
            args += ["--network-alias", alias]
        args += ["--read-only", "--cap-drop", "ALL", "--user", "65534:65534", "--entrypoint", "sleep"]
        docker(*args, self.pause_image, "infinity")
        self._make_volumes(pod)
        for container in pod.spec.get("initContainers", []):
            self._check_cancelled()
            self._run_init(pod, container)
        policy = {"Always": "always", "OnFailure": "on-failure", "Never": "no"}[pod.spec.get("restartPolicy", "Always")]
        for container in pod.spec["containers"]:
            self._check_cancelled()
            docker(*self._run_args(pod, container, detach=True, restart=policy))

    def _make_volumes(self, pod: Pod) -> None:
        """emptyDirs (fresh per pod) and the StatefulSet's claims (kept by name, as PVCs outlive pods)."""
        claims = [t["metadata"]["name"] for t in pod.workload["spec"].get("volumeClaimTemplates", [])]
        for claim in claims:
            pod.volumes[claim] = f"{claim}-{pod.name}"
        for volume in pod.spec.get("volumes", []):
            if "emptyDir" in volume:
                pod.volumes[volume["name"]] = f"{pod.name}_{volume['name']}"
            elif "persistentVolumeClaim" in volume:
                pod.volumes[volume["name"]] = volume["persistentVolumeClaim"]["claimName"]
            else:
                raise HarnessError(f"{pod.name}: volume {volume['name']} is of a kind the harness does not run")
        fs_group = pod.spec.get("securityContext", {}).get("fsGroup")
        mounts: list[str] = []
        for name, docker_volume in pod.volumes.items():
            docker("volume", "create", "--label", LABEL, docker_volume)
            mounts += ["--mount", f"type=volume,src={docker_volume},dst=/v/{name},volume-nocopy"]
        if mounts:
            # The kubelet's part: emptyDirs are world-writable; with fsGroup, every volume is that group's, setgid.
            script = "chmod 0777 /v/*" if fs_group is None else f"chgrp -R {fs_group} /v/* && chmod 2775 /v/*"
            docker("run", "--rm", "--network", "none", "--user", "0:0", *mounts, "--entrypoint", "sh",
                   self.pause_image, "-c", script)  # fmt: skip

    def _run_init(self, pod: Pod, container: dict[str, Any]) -> None:
        name = pod.container_name(container["name"])
        for attempt in range(3):  # the kubelet retries a failed initContainer (restartPolicy Always) with backoff
            docker("rm", "-f", name, check=False)
            docker(*self._run_args(pod, container, detach=True, restart="no"))
            code = docker("wait", name, timeout=600)
            if code == "0":
                return
            logs = subprocess.run(["docker", "logs", "--tail", "30", name], capture_output=True, text=True).stderr
            print(f"harness: {name} exited {code} (attempt {attempt + 1}):\n{logs}", file=sys.stderr)
            time.sleep(2 * (attempt + 1))
        raise HarnessError(f"initContainer {name} did not succeed")

    def environment(self, pod: Pod, container: dict[str, Any]) -> dict[str, str]:
        """The container's environment as the kubelet builds it."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                values = self.secrets.get(source["secretRef"]["name"])
            else:
                values = self._config_map(source["configMapRef"]["name"])
            if values is None and not (source.get("secretRef") or source.get("configMapRef", {})).get("optional"):
                raise HarnessError(f"{pod.name}: envFrom {source} is missing")
            env |= {source.get("prefix", "") + k: v for k, v in (values or {}).items()}
        for entry in container.get("env", []):
            if "value" in entry:
                env[entry["name"]] = expand(str(entry["value"]), env)
                continue
            value = self._value_from(pod, container, entry["valueFrom"])
            if value is not None:
                env[entry["name"]] = value
        env |= self.env_overrides.get((pod.workload["metadata"]["name"], container["name"]), {})
        return env

    def _config_map(self, name: str) -> dict[str, str] | None:
        found = [c for c in self.kind("ConfigMap") if c["metadata"]["name"] == name]
        return dict(found[0].get("data") or {}) if found else None

    def _value_from(self, pod: Pod, container: dict[str, Any], source: dict[str, Any]) -> str | None:
        if "secretKeyRef" in source or "configMapKeyRef" in source:
            ref = source.get("secretKeyRef") or source["configMapKeyRef"]
            values = self.secrets.get(ref["name"]) if "secretKeyRef" in source else self._config_map(ref["name"])
            if values is None or ref["key"] not in values:
                if ref.get("optional"):
                    return None
                raise HarnessError(
                    f"{pod.name}: {ref['name']}/{ref['key']} does not exist (CreateContainerConfigError)"
                )
            return values[ref["key"]]
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            if path == "metadata.name":
                return pod.name
            if path == "metadata.namespace":
                return str(pod.workload["metadata"].get("namespace", "default"))
            if match := re.fullmatch(r"metadata\.labels\['(.+)'\]", path):
                return pod.labels.get(match.group(1), "")
            if path == "status.podIP":
                return pod.ip()
            raise HarnessError(f"{pod.name}: fieldRef {path} is not supported")
        if "resourceFieldRef" in source:
            resource = source["resourceFieldRef"]["resource"]
            kind, what = resource.split(".")
            quantity = container.get("resources", {}).get(kind, {}).get(what)
            if quantity is None:
                raise HarnessError(f"{pod.name}: {resource} is not set")
            return str(memory_bytes(quantity)) if what == "memory" else str(max(1, int(float(cpus(quantity)) + 0.999)))
        raise HarnessError(f"{pod.name}: unsupported env source {source}")

    def _run_args(self, pod: Pod, container: dict[str, Any], *, detach: bool, restart: str) -> list[str]:
        image = self.image_map.get(container["image"], container["image"])
        env = self.environment(pod, container)
        security = pod.spec.get("securityContext", {}) | container.get("securityContext", {})
        args = ["run", "--label", LABEL, "--name", pod.container_name(container["name"])]
        args += ["-d"] if detach else []
        args += ["--network", f"container:{pod.pause}", "--restart", restart]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        uid, gid = security.get("runAsUser"), security.get("runAsGroup")
        if uid is not None:
            args += ["--user", f"{uid}:{gid if gid is not None else 0}"]
        if security.get("runAsNonRoot") and (
            uid == 0 or (uid is None and self._image_user(image) in ("", "0", "root"))
        ):
            raise HarnessError(f"{pod.name}/{container['name']}: runAsNonRoot, but the image runs as root")
        if pod.spec.get("securityContext", {}).get("fsGroup") is not None:
            args += ["--group-add", str(pod.spec["securityContext"]["fsGroup"])]
        if security.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        if security.get("privileged"):
            args.append("--privileged")
        if security.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        capabilities = security.get("capabilities", {})
        args += [arg for cap in capabilities.get("drop", []) for arg in ("--cap-drop", cap)]
        args += [arg for cap in capabilities.get("add", []) for arg in ("--cap-add", cap)]
        limits = container.get("resources", {}).get("limits", {})
        if "memory" in limits:
            args += ["--memory", str(memory_bytes(limits["memory"]))]
        if "cpu" in limits:
            args += ["--cpus", cpus(limits["cpu"])]
        for mount in container.get("volumeMounts", []):
            spec = f"type=volume,src={pod.volumes[mount['name']]},dst={mount['mountPath']},volume-nocopy"
            args += ["--mount", spec + (",readonly" if mount.get("readOnly") else "")]
        command = [expand(str(c), env) for c in container.get("command", [])]
        rest = [expand(str(a), env) for a in container.get("args", [])]
        if command:
            args += ["--entrypoint", command[0]]
            rest = command[1:] + rest
        return [*args, image, *rest]

    @staticmethod
    def _image_user(image: str) -> str:
        return docker("image", "inspect", "-f", "{{.Config.User}}", image).split(":")[0]

    # -- probes ----------------------------------------------------------------------------------------------------

    def wait_ready(self, pod: Pod, timeout: float | None = None) -> None:
        """Poll each container's startup and then readiness probe until it passes."""
        for container in pod.spec["containers"]:
            for kind in ("startupProbe", "readinessProbe"):
                probe = container.get(kind)
                if not probe:
                    continue
                period = probe.get("periodSeconds", 10)
                budget = timeout or max(180.0, period * probe.get("failureThreshold", 3))
                deadline = time.monotonic() + budget
                while not self.probe(pod, container, probe):
                    self._check_cancelled()
                    state = docker(
                        "inspect", "-f", "{{.State.Status}} {{.RestartCount}}", pod.container_name(container["name"])
                    )
                    if time.monotonic() > deadline:
                        raise HarnessError(
                            f"{pod.name}/{container['name']}: {kind} failing after {budget:.0f} s ({state})"
                        )
                    time.sleep(min(period, 1.0))

    def probe(self, pod: Pod, container: dict[str, Any], probe: dict[str, Any]) -> bool:
        """One probe, as the kubelet runs it (httpGet and tcpSocket against the pod's address)."""
        timeout = probe.get("timeoutSeconds", 1)
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
        try:
            if "httpGet" in probe:
                get = probe["httpGet"]
                port = ports.get(get["port"], get["port"])
                url = f"http://{pod.ip()}:{port}{get.get('path', '/')}"
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    return 200 <= response.status < 400
            if "tcpSocket" in probe:
                port = ports.get(probe["tcpSocket"]["port"], probe["tcpSocket"]["port"])
                with socket.create_connection((pod.ip(), int(port)), timeout=timeout):
                    return True
            if "exec" in probe:
                name = pod.container_name(container["name"])
                result = subprocess.run(
                    ["docker", "exec", name, *probe["exec"]["command"]], capture_output=True, timeout=timeout + 5
                )
                return result.returncode == 0
        except (OSError, urllib.error.URLError, subprocess.TimeoutExpired, HarnessError):
            return False
        raise HarnessError(f"{pod.name}: unsupported probe {probe}")

    # -- the ingress -----------------------------------------------------------------------------------------------

    def backends(self) -> dict[str, str]:
        """Each Service name -> the base URL of the (first) pod it selects."""
        found: dict[str, str] = {}
        for service in self.kind("Service"):
            name = service["metadata"]["name"]
            pod = next((p for p in self.pods if name in p.aliases), None)
            if pod and service["spec"].get("ports"):
                found[name] = f"http://{pod.ip()}:{service['spec']['ports'][0]['port']}"
        return found

    def describe(self) -> dict[str, Any]:
        """What the tests need to reach the stack: pods, their containers and addresses."""
        return {
            pod.name: {
                "workload": pod.workload["metadata"]["name"],
                "ip": pod.ip(),
                "containers": {c["name"]: pod.container_name(c["name"]) for c in pod.spec["containers"]},
                "aliases": pod.aliases,
            }
            for pod in self.pods
        }

    # -- stop ------------------------------------------------------------------------------------------------------

    def down(self) -> None:
        """Keep every container's logs in .containers/logs, then remove what the harness made."""
        logs = STATE / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        names = docker("ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Names}}", check=False).split()
        for name in names:
            with (logs / f"{name}.log").open("w") as out:
                subprocess.run(["docker", "logs", name], stdout=out, stderr=subprocess.STDOUT, check=False)
        if names:
            docker("rm", "-f", "-v", *names, check=False)
        volumes = docker("volume", "ls", "-q", "--filter", f"label={LABEL}", check=False).split()
        if volumes:
            docker("volume", "rm", "-f", *volumes, check=False)
        docker("network", "rm", NETWORK, check=False)


def parse_overrides(values: list[str]) -> dict[tuple[str, str], dict[str, str]]:
    """WORKLOAD/CONTAINER/NAME=VALUE flags into a lookup."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for value in values:
        target, _, setting = value.partition("=")
        workload, container, name = target.split("/")
        found.setdefault((workload, container), {})[name] = setting
    return found


def serve_gateway(stack: Stack, manifest: Path, port: int) -> Any:
    """The overlay's Ingress rules on 127.0.0.1:port, through the dev gateway (ticketing_dev.gateway)."""
    import uvicorn

    from ticketing_dev.gateway import create_gateway

    config = uvicorn.Config(
        create_gateway(manifest, stack.backends()), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise HarnessError(f"the gateway could not listen on 127.0.0.1:{port}")
        time.sleep(0.05)
    return server


def main(argv: list[str]) -> int:
    """`harness.py up`: run the overlay until SIGINT or SIGTERM, then remove it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--overlay", default="dev")
    parser.add_argument("--port", type=int, default=int(os.environ.get("TICKETING_CONTAINERS_PORT", "8080")))
    parser.add_argument("--env", action="append", default=[], help="WORKLOAD/CONTAINER/NAME=VALUE (test-only)")
    parser.add_argument("--ready-file", type=Path, help="write the URL and pods here as JSON once ready")
    options = parser.parse_args(argv)

    image_map = dict(
        item.split("=", 1) for item in os.environ.get("TICKETING_CONTAINERS_IMAGE_MAP", "").split(",") if item
    )
    objects = render(options.overlay)
    stack = Stack(
        objects,
        image_map=image_map,
        pause_image=os.environ.get("TICKETING_CONTAINERS_PAUSE_IMAGE", "python:3.11-slim-bookworm"),
        env_overrides=parse_overrides(options.env),
    )
    stopping = threading.Event()

    def stop(*_: object) -> None:
        if stopping.is_set():
            return
        stopping.set()
        raise KeyboardInterrupt  # interrupts the start-up too; `finally` removes the stack

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for image, standin in image_map.items():
        print(f"harness: {image} is stood in for by {standin}")
    started = time.monotonic()
    stack.down()  # whatever an interrupted run left behind
    try:
        stack.up()
        manifest = STATE / f"rendered-{options.overlay}.yaml"
        manifest.write_text(yaml.safe_dump_all(objects))
        serve_gateway(stack, manifest, options.port)
        url = f"http://127.0.0.1:{options.port}"
        print(
            f"harness: the {options.overlay} overlay is up in {time.monotonic() - started:.0f} s at {url}", flush=True
        )
        print(f"harness: try  curl -s {url}/api/users/currentuser   (Ctrl-C stops and removes it)", flush=True)
        if options.ready_file:
            options.ready_file.write_text(json.dumps({"url": url, "pods": stack.describe()}))
        while not stopping.wait(1):
            pass
        return 0
    except KeyboardInterrupt:
        return 0
    except HarnessError as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 1
    finally:
        print("harness: removing the stack (logs in .containers/logs)", flush=True)
        stack.down()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
