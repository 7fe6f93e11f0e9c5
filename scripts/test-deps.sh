#!/usr/bin/env bash
# Installs the system packages the tests need when they are missing, so the README's test
# command works on a fresh machine: Debian's `chromium` (tests/browser.rs drives it headless)
# and `redis-server` (tests/cluster.rs and `loadtest --nodes` start their own on free ports and
# kill them by pid; the system service is not relied on) and `prometheus` (gives `prometheus`
# and `promtool`: tests/metrics.rs checks /metrics with `promtool check metrics` and scrapes
# the server with a real Prometheus on a free port, ended by pid) and `haproxy` (tests/cluster_affine.rs
# puts it in front of id-affine nodes, ended by pid) and `redis-tools` (redis-cli: the Redis
# Cluster of tests/redis_cluster.rs; redis-benchmark: scripts/redis-backlog-cost.py). Quiet unless an install fails, then
# the apt log goes to stderr and the script exits 1. Needs root and apt (Debian), as on CI;
# elsewhere it says what to install and exits 1.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v redis-server >/dev/null || missing+=(redis-server)
# redis-cli (tests/redis_cluster.rs creates its Redis Cluster with `redis-cli --cluster create`).
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v promtool >/dev/null || missing+=(prometheus)
command -v haproxy >/dev/null || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "the tests need: ${missing[*]} (Debian: apt-get install -y ${missing[*]})" >&2
        exit 1
    fi
    echo "installing ${missing[*]} (apt-get)"
    apt_log=$(mktemp)
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >"$apt_log" 2>&1; then
        cat "$apt_log" >&2
        rm -f "$apt_log"
        echo "installing ${missing[*]} failed" >&2
        exit 1
    fi
    rm -f "$apt_log"
fi
chromium --version 2>/dev/null || true
redis-server --version
promtool --version 2>&1 | head -1
