#!/usr/bin/env bash
# A perf profile of one backend while `loadtest compare` saturates it. The server is started
# here (fixed ports 18000/18001) so that perf can attach to its pid, and measured as an
# external server with the seed's framing. Assumes: root, perf (Debian: linux-perf), the
# ports free, a release binary.
#   loadtest/perf-profile.sh BACKEND OUTDIR [BINARY]
# writes OUTDIR/perf-BACKEND-compare.txt (the compare table of the profiled run),
# perf-BACKEND-report.txt (flat profile by symbol, top 60 lines) and perf-BACKEND-dso.txt
# (time by thread and object). The server is stopped by its pid at the end.
set -euo pipefail
backend=$1; out=$2; bin=${3:-target/release/uring-comet}
tmp=$(mktemp -d)
"$bin" serve --listen 127.0.0.1:18000 --publish-listen 127.0.0.1:18001 --backend "$backend" \
  > "$tmp/serve.out" 2> "$tmp/serve.err" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; rm -rf "$tmp"' EXIT
sleep 1
"$bin" loadtest compare --backends none --no-ceiling --conns 15000 --pid "$server" \
  --name "$backend-perf" --stream seed --url-template 'http://127.0.0.1:18000/test/{id}' \
  --publish-url-template 'http://127.0.0.1:18001/send/{id}' \
  > "$out/perf-$backend-compare.txt" 2> "$tmp/compare.err" &
compare=$!
for _ in $(seq 600); do grep -q saturating "$tmp/compare.err" && break; sleep 0.1; done
sleep 1   # into the 10 s window, past the publishers' connects
perf record -g -p "$server" -o "$tmp/perf.data" -- sleep 7 2> "$tmp/record.err"
wait "$compare" || true
perf report -i "$tmp/perf.data" --stdio --no-children -g none --sort dso,sym 2>/dev/null \
  | grep -v '^$' | head -60 > "$out/perf-$backend-report.txt"
perf report -i "$tmp/perf.data" --stdio --no-children -g none --sort comm,dso 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | head -15 > "$out/perf-$backend-dso.txt"
