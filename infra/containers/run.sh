#!/usr/bin/env bash
# `make test-containers` (run.sh test) and `make containers` (run.sh up [dev|prod]): the service images built from
# infra/docker/Dockerfile and run on a real container engine, wired as the rendered manifests wire them.
#
# Installs what it needs when missing (Debian's docker.io, containerd, runc, iptables, debootstrap), starts a private
# dockerd (engine.sh; stopped on exit, pass or fail), builds the stand-in bases (standins.sh), then every service
# image with only the base-image build arguments changed, and hands over to the test harness (harness.py).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
STATE="$REPO/.containers"
MODE=${1:-test}
OVERLAY=${2:-dev}
SERVICES=(auth tickets orders expiration payments client)
UV=${UV:-$(command -v uv || echo "$REPO/.tools/bin/uv")}
PYTHON="$REPO/.venv/bin/python"
# Debian's CLI: the one in /usr/local/bin may lack BuildKit support.
PATH="/usr/bin:/usr/sbin:$PATH"
export DOCKER_BUILDKIT=1
started=$(date +%s)
mkdir -p "$STATE"

missing=()
for tool in dockerd:docker.io containerd:containerd runc:runc iptables:iptables debootstrap:debootstrap; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
    echo "containers: installing ${missing[*]} (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# shellcheck source=infra/containers/engine.sh
source "$REPO/infra/containers/engine.sh"
# shellcheck source=infra/containers/standins.sh
source "$REPO/infra/containers/standins.sh"
trap engine_stop EXIT
trap 'exit 130' INT TERM
engine_start
standins_build

# The images exactly as skaffold builds them, only from the stand-in bases. The host's CA bundle reaches the
# dependency download as a build secret (for a TLS-intercepting proxy); it is in no layer of the image.
secret=()
[[ -s /etc/ssl/certs/ca-certificates.crt ]] && secret=(--secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt)
for service in "${SERVICES[@]}"; do
    t0=$(date +%s)
    docker build --quiet -f infra/docker/Dockerfile --build-arg SERVICE="$service" \
        --build-arg PYTHON_IMAGE="$STANDIN_PYTHON" --build-arg UV_IMAGE="$STANDIN_UV" "${secret[@]}" \
        -t "ticketing/$service:0.1.0" . >/dev/null
    echo "containers: built ticketing/$service:0.1.0 in $(($(date +%s) - t0)) s"
done

docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' 'ticketing/*' | sed 's/^/containers: image size: /'

IMAGE_MAP="postgres:18.6-alpine=$STANDIN_POSTGRES,nats:2.15.1-alpine=$STANDIN_NATS"
export TICKETING_CONTAINERS_IMAGE_MAP="$IMAGE_MAP" TICKETING_CONTAINERS_PAUSE_IMAGE="$STANDIN_PYTHON"
case "$MODE" in
    test)
        PYTHONPATH="$REPO/infra/containers/tests" "$REPO/.venv/bin/pytest" -p no:cacheprovider infra/containers/tests \
            ${PYTEST_ARGS:-}
        echo "containers: test-containers passed in $(($(date +%s) - started)) s"
        ;;
    up)
        "$PYTHON" infra/containers/harness.py up --overlay "$OVERLAY"
        ;;
    *)
        echo "usage: run.sh test | up [dev|prod]" >&2
        exit 2
        ;;
esac
