#!/usr/bin/env bash
# Offline checks of the Kubernetes side (`make k8s-check`, part of `make test`): render every overlay with the
# pinned kubectl, validate the output strictly against the Kubernetes schemas of the oldest supported (1.30) and
# newest bundled version, security-lint the rendered manifests (checkov) and the Dockerfiles (hadolint, checkov),
# and lint the GitHub workflows (actionlint). Expects kubectl (.venv) and kubernetes-validate, checkov, hadolint
# and actionlint (.tools/k8s) on PATH; the Makefile sets it.
set -euo pipefail
cd "$(dirname "$0")/../.."

OLDEST_K8S=1.30.0
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT

for overlay in infra/k8s/overlays/*/; do
    name=$(basename "$overlay")
    kubectl kustomize "$overlay" > "$rendered/$name.yaml"
    echo "k8s-check: rendered $name ($(grep -c '^kind:' "$rendered/$name.yaml") objects)"
    kubernetes-validate --strict --quiet --kubernetes-version "$OLDEST_K8S" "$rendered/$name.yaml"
    kubernetes-validate --strict --quiet "$rendered/$name.yaml"
    echo "k8s-check: $name is valid against the Kubernetes $OLDEST_K8S and $(kubernetes-validate --version | awk '{print $NF}') schemas"
done

# --skip-download (in checkov.yaml) keeps checkov offline.
checkov --config-file infra/k8s/checkov.yaml --directory "$rendered"
# The one service Dockerfile and the stand-in images' Dockerfiles of the container tests.
hadolint infra/docker/Dockerfile infra/containers/standins/*.Dockerfile
checkov --framework dockerfile --skip-download --compact --quiet --directory infra/docker
checkov --framework dockerfile --skip-download --compact --quiet --directory infra/containers/standins
echo "k8s-check: manifests and Dockerfiles pass checkov and hadolint"
# The GitHub workflows (actionlint also runs shellcheck on their scripts when it is installed).
actionlint .github/workflows/*.yml
echo "k8s-check: the GitHub workflows pass actionlint"
