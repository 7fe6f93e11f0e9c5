#!/usr/bin/env bash
# Runs one fuzz target for SECONDS (default 1800) on the stable toolchain and records the run.
#   bash fuzz/run.sh TARGET [SECONDS] [RECORD_FILE]
# cargo-fuzz needs nightly flags (-Zsanitizer, sancov): RUSTC_BOOTSTRAP=1 lets the stable
# compiler take them. New inputs go to a scratch corpus (FUZZ_WORK, default
# /tmp/uring-comet-fuzz/TARGET) seeded from fuzz/corpus/TARGET; minimise them into the
# committed corpus afterwards with:
#   RUSTC_BOOTSTRAP=1 cargo fuzz cmin -O TARGET $FUZZ_WORK   (then copy into fuzz/corpus/TARGET)
# Low priority (nice 19) so the machine stays usable; run one target at a time. With JOBS=N
# set, libFuzzer runs N worker processes (-jobs=N; each logs to fuzz-K.log, kept in the record).
set -euo pipefail
cd "$(dirname "$0")"
t=${1:?target: request_head | id | stream_message | ws_frames | chunked_body}
secs=${2:-1800}
record=${3:-}
work=${FUZZ_WORK:-/tmp/uring-comet-fuzz/$t}
target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$work" "corpus/$t"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O --target-dir "$target_dir" "$t"
log=$(mktemp)
start=$(date -u +%FT%TZ)
jobs=()
if [ -n "${JOBS:-}" ]; then jobs=(-jobs="$JOBS" -workers="$JOBS"); rm -f fuzz-*.log; fi
set +e
nice -n 19 cargo fuzz run -O --target-dir "$target_dir" "$t" "$work" "corpus/$t" -- \
  -max_total_time="$secs" -dict=http.dict -max_len=20000 -print_final_stats=1 -timeout=10 \
  "${jobs[@]}" >"$log" 2>&1
rc=$?
set -e
# With -jobs the workers' output is in fuzz-K.log, not on stdout.
if [ -n "${JOBS:-}" ]; then cat fuzz-*.log >>"$log" 2>/dev/null || true; rm -f fuzz-*.log; fi
end=$(date -u +%FT%TZ)
if [ -n "$record" ]; then
  {
    echo "fuzz target: $t"
    echo "command: ${JOBS:+JOBS=$JOBS }bash fuzz/run.sh $t $secs  (cargo fuzz run -O, ASan, -max_len=20000, -dict=http.dict${JOBS:+, -jobs=$JOBS})"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || cat ../COMMIT 2>/dev/null || echo unknown)"
    echo "toolchain: $(rustc -V) with RUSTC_BOOTSTRAP=1; $(cargo fuzz --version)"
    echo "host: $(uname -sr), $(nproc) cores; load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "started: $start  ended: $end  requested: ${secs} s  exit status: $rc"
    echo "corpus at end: $(ls "$work" | wc -l) inputs in the scratch corpus"
    echo
    echo "--- last status line and final stats"
    grep -E '^#[0-9]+' "$log" | tail -n 1
    grep -E '^(Done|stat::)' "$log"
    if [ $rc -ne 0 ]; then echo "--- failure"; grep -v '^#' "$log" | tail -n 60; fi
  } >"$record"
fi
tail -n 20 "$log"
rm -f "$log"
exit $rc
