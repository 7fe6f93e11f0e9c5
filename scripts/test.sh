#!/usr/bin/env bash
# The project's test command (README): doc tests, unit tests, and integration tests against
# the real server on 127.0.0.1 port 0 (each body on both backends). Release mode: the
# concurrency tests open thousands of connections and run faster optimised. Ends with one
# line `tests: N passed, N failed` summing every test binary. First installs the system
# packages the tests need when missing (scripts/test-deps.sh: chromium, redis-server, prometheus).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== system packages for the tests (scripts/test-deps.sh)"
bash scripts/test-deps.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --doc 2>&1 | tee -a "$log" || status=$?
cargo test --release --all-targets 2>&1 | tee -a "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit $status
