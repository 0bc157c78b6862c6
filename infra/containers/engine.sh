#!/usr/bin/env bash
# A private Docker engine for `make test-containers` and `make containers`, sourced by run.sh.
#
# engine_start starts dockerd on its own socket, data root, exec root and pidfile under .containers/engine, so
# that it never touches (or collides with) another engine on the machine; engine_stop, which run.sh traps on
# exit, stops it by its pid and removes what it added to the host's networking: the docker0 bridge and the
# networks' bridges, its iptables chains and rules, and FORWARD's policy and ip_forward back to what they were.
# With DOCKER_HOST already set (a CI runner's engine), both do nothing and that engine is used as it is.

ENGINE_DIR="$STATE/engine"
ENGINE_PID=""

engine_start() {
    if [[ -n "${DOCKER_HOST:-}" ]]; then
        echo "containers: using the engine at DOCKER_HOST=$DOCKER_HOST"
        return
    fi
    mkdir -p "$ENGINE_DIR"
    export DOCKER_HOST="unix://$ENGINE_DIR/docker.sock"
    if [[ -f "$ENGINE_DIR/dockerd.pid" ]] && kill -0 "$(cat "$ENGINE_DIR/dockerd.pid")" 2>/dev/null; then
        echo "containers: a private dockerd from an earlier run is still up (pid $(cat "$ENGINE_DIR/dockerd.pid")); stopping it"
        ENGINE_PID=$(cat "$ENGINE_DIR/dockerd.pid")
        engine_stop
        export DOCKER_HOST="unix://$ENGINE_DIR/docker.sock"
    fi
    cat /proc/sys/net/ipv4/ip_forward > "$ENGINE_DIR/ip_forward.before"
    iptables -S FORWARD 2>/dev/null | awk '$1 == "-P" {print $3}' > "$ENGINE_DIR/forward_policy.before" || true
    ip link show docker0 >/dev/null 2>&1 && echo 1 > "$ENGINE_DIR/docker0.before" || rm -f "$ENGINE_DIR/docker0.before"
    dockerd --host "$DOCKER_HOST" --data-root "$ENGINE_DIR/data" --exec-root "$ENGINE_DIR/exec" \
        --pidfile "$ENGINE_DIR/dockerd.pid" --containerd-namespace ticketing-containers \
        --containerd-plugins-namespace ticketing-containers-plugins >"$ENGINE_DIR/dockerd.log" 2>&1 &
    ENGINE_PID=$!
    for _ in $(seq 100); do
        if docker version >/dev/null 2>&1; then
            echo "containers: private dockerd up (pid $ENGINE_PID, $DOCKER_HOST)"
            return
        fi
        kill -0 "$ENGINE_PID" 2>/dev/null || break
        sleep 0.2
    done
    echo "containers: dockerd did not start; see $ENGINE_DIR/dockerd.log" >&2
    tail -20 "$ENGINE_DIR/dockerd.log" >&2
    return 1
}

engine_stop() {
    [[ -n "$ENGINE_PID" ]] || return 0
    # Containers first, so that nothing outlives the run even if the daemon is slow to stop.
    local running
    running=$(docker ps -aq 2>/dev/null || true)
    [[ -z "$running" ]] || docker rm -f $running >/dev/null 2>&1 || true
    # The bridges of the networks this engine made (Docker names them br-<first 12 characters of the id>).
    local bridges
    bridges=$(docker network ls -q --filter driver=bridge --filter type=custom 2>/dev/null | cut -c1-12 | sed 's/^/br-/' || true)
    kill -TERM "$ENGINE_PID" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$ENGINE_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$ENGINE_PID" 2>/dev/null || true
    echo "containers: private dockerd stopped (pid $ENGINE_PID)"
    ENGINE_PID=""
    unset DOCKER_HOST
    # What dockerd added to the host's networking.
    if [[ ! -f "$ENGINE_DIR/docker0.before" ]] && ip link show docker0 >/dev/null 2>&1; then
        ip link delete docker0 2>/dev/null || true
    fi
    for link in $bridges; do
        ip link delete "$link" 2>/dev/null || true
    done
    if pgrep -x dockerd >/dev/null; then
        echo "containers: another dockerd runs on this machine; its iptables chains are left alone"
        return 0
    fi
    local table chain
    for table in filter nat; do
        iptables -t "$table" -S 2>/dev/null | grep -E '^-A (FORWARD|PREROUTING|OUTPUT|POSTROUTING) .*(DOCKER|docker0|br-)' \
            | sed 's/^-A/-D/' | while read -r rule; do eval "iptables -t $table $rule" 2>/dev/null || true; done
        for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N DOCKER/ {print $2}'); do
            iptables -t "$table" -F "$chain" 2>/dev/null || true
        done
        for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N DOCKER/ {print $2}'); do
            iptables -t "$table" -X "$chain" 2>/dev/null || true
        done
    done
    if [[ -s "$ENGINE_DIR/forward_policy.before" ]]; then  # dockerd sets FORWARD's policy to DROP
        iptables -P FORWARD "$(cat "$ENGINE_DIR/forward_policy.before")" 2>/dev/null || true
    fi
    if [[ -f "$ENGINE_DIR/ip_forward.before" ]]; then
        cat "$ENGINE_DIR/ip_forward.before" > /proc/sys/net/ipv4/ip_forward 2>/dev/null || true
    fi
}
