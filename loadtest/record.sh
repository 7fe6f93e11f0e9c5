#!/usr/bin/env bash
# Records a benchmark run in loadtest/runs/<date>-<host>/: env.txt (kernel, CPU, rustc,
# sysctls, limits, commit), then the raw output of each scenario given on the command line.
# Assumes: run from anywhere inside the repository on an otherwise quiet machine; it builds
# the release binary first. Usage:
#   loadtest/record.sh NAME -- LOADTEST-ARGS...     e.g. loadtest/record.sh ck10-uring -- --backend uring
# writes NAME.json (the --json report) and NAME.txt (progress and Stats lines).
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; shift
[ "${1:-}" = "--" ] && shift
dir="loadtest/runs/$(date +%F)-$(hostname)"
mkdir -p "$dir"
cargo build --release --quiet
if [ ! -f "$dir/env.txt" ]; then
  {
    echo "date: $(date -Is)"
    echo "commit: $(git rev-parse HEAD)$(git diff --quiet || echo ' (dirty)')"
    echo "kernel: $(uname -r)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) x $(nproc)"
    echo "memory: $(free -h | awk '/Mem:/ {print $2}')"
    echo "rustc: $(rustc --version)"
    echo "RLIMIT_NOFILE: $(ulimit -n)"
    for k in fs.nr_open fs.file-max net.core.somaxconn net.ipv4.ip_local_port_range \
             net.ipv4.tcp_rmem net.ipv4.tcp_wmem net.ipv4.tcp_mem kernel.io_uring_disabled; do
      echo "$k: $(sysctl -n $k 2>/dev/null | tr '\t' ' ')"
    done
  } > "$dir/env.txt"
fi
status=0
./target/release/uring-comet loadtest --json "$@" > "$dir/$name.json" 2> "$dir/$name.txt" || status=$?
cat "$dir/$name.json"; echo
echo "recorded in $dir/$name.{txt,json} (exit $status)"
exit $status
