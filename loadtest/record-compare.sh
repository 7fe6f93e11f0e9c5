#!/usr/bin/env bash
# Records `loadtest compare` (uring, epoll and an nginx+nchan row) in loadtest/runs/, the way
# the 2026-11-29 records were made. Assumes: root on Linux with sched_autogroup; the peers
# folder at ../shared/peers beside the repository with install.sh already run (nginx and
# libnginx-mod-nchan installed); deliver-ceiling at ../shared/tools/deliver-ceiling.
#   loadtest/record-compare.sh PREFIX RUNS [COMPARE-ARGS...]   e.g. loadtest/record-compare.sh compare-15k 3
# writes PREFIX-run1..RUNS.{json,txt} through record.sh. What it does and why:
# - builds the binary from a clean `git archive` of HEAD (others may be editing the tree),
#   so each record names exactly one commit;
# - restarts nchan before each run: nginx keeps its memory after the subscribers leave, so a
#   second run on the same nginx would measure nothing per connection;
# - sets this session's autogroup and nginx's (it daemonizes into a session of its own) to
#   nice -19 for each run and back to 0 after: with sched_autogroup the CPU is shared between
#   sessions first, so plain nice does not keep other sessions' builds off the 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=$1; runs=$2; shift 2
peers=../shared/peers
snap=$(mktemp -d)
trap 'rm -rf "$snap"; echo 0 > /proc/$$/autogroup' EXIT
git archive HEAD | tar -x -C "$snap"
target=/tmp/uring-comet-snap-target
(cd "$snap" && CARGO_TARGET_DIR=$target cargo build --release --quiet)
export UC_BIN=$target/release/uring-comet
export UC_BIN_NOTE="(built from commit $(git rev-parse HEAD), git archive, clean; session autogroup and nginx's at nice -19)"
for i in $(seq "$runs"); do
  bash "$peers/nchan.sh" stop; bash "$peers/nchan.sh" start; sleep 2
  nginx_pid=$(cat /tmp/peers-nchan/nginx.pid)
  echo -19 > /proc/$$/autogroup; echo -19 > "/proc/$nginx_pid/autogroup"
  loadtest/record.sh "$prefix-run$i" -- compare --backends uring,epoll --conns 15000 \
    --pid "$nginx_pid" --name nchan --stream sse \
    --url-template 'http://127.0.0.1:8081/sub/{id}' \
    --publish-url-template 'http://127.0.0.1:8081/pub/{id}' "$@" || true
  echo 0 > /proc/$$/autogroup; echo 0 > "/proc/$nginx_pid/autogroup"
done
bash "$peers/nchan.sh" stop
