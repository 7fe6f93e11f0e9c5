#!/usr/bin/env bash
# Records a benchmark run in loadtest/runs/<date>-<host>/: env.txt (kernel, CPU, rustc,
# sysctls, limits, commit), then the raw output of each scenario given on the command line.
# Assumes: run from anywhere inside the repository on an otherwise quiet machine (the load
# average before and after is recorded, since the host's 2 cores are shared); it builds the
# release binary first (in $CARGO_TARGET_DIR if set, else target/), unless UC_BIN names a
# prebuilt one (e.g. built from a clean `git archive` of one commit while others edit the tree;
# UC_BIN_NOTE says what it is, for the record). Usage:
#   loadtest/record.sh NAME -- LOADTEST-ARGS...     e.g. loadtest/record.sh ck10-uring -- --backend uring
#   loadtest/record.sh NAME -- compare ARGS...      e.g. loadtest/record.sh compare-15k -- compare --conns 15000
#   loadtest/record.sh NAME -- soak ARGS...         e.g. loadtest/record.sh soak-10m -- soak --duration 10m
#   loadtest/record.sh NAME -- million ARGS...      e.g. loadtest/record.sh million -- million
#     (million also records the sysctls, nstat counters and the busiest processes before it
#     starts, since its connect rate depends on both)
# writes NAME.json (the --json report) and NAME.txt (the command, commit, load average,
# progress and Stats lines; for compare also the table, which it prints on stderr with --json).
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; shift
[ "${1:-}" = "--" ] && shift
dir="loadtest/runs/$(date +%F)-$(hostname)"
mkdir -p "$dir"
if [ -n "${UC_BIN:-}" ]; then
  bin=$UC_BIN
else
  cargo build --release --quiet
  bin="${CARGO_TARGET_DIR:-target}/release/uring-comet"
fi
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
# Subcommands with a report take --json after their name; the main job takes it first.
case "${1:-}" in
  compare|soak|million|friends|history|room) cmd=(loadtest "$1" --json "${@:2}") ;;
  *) cmd=(loadtest --json "$@") ;;
esac
{
  echo "command: uring-comet ${cmd[*]}"
  echo "commit: $(git rev-parse HEAD)$(git diff --quiet || echo ' (dirty)')"
  echo "binary: $bin ${UC_BIN_NOTE:-}"
  echo "start: $(date -Is); uptime: $(uptime)"
  if [ "${1:-}" = million ]; then
    echo "--- before"
    for k in fs.nr_open fs.file-max net.core.somaxconn net.ipv4.tcp_max_syn_backlog \
             net.core.netdev_max_backlog net.ipv4.ip_local_port_range net.ipv4.tcp_tw_reuse \
             net.ipv4.tcp_rmem net.ipv4.tcp_wmem net.ipv4.tcp_mem net.ipv4.tcp_ehash_entries \
             net.netfilter.nf_conntrack_max kernel.io_uring_disabled; do
      echo "$k: $(sysctl -n $k 2>/dev/null | tr '\t' ' ')"
    done
    echo "nstat: $(nstat -az TcpRetransSegs TcpExtListenOverflows TcpExtListenDrops \
      TcpExtTCPAbortOnMemory TcpExtTCPMemoryPressures 2>/dev/null | awk 'NR>1 {printf "%s=%s ", $1, $2}')"
    echo "--- busiest processes before"
    ps -eo pid,pcpu,rss,comm --sort=-pcpu | head -6
    echo "---"
  fi
} > "$dir/$name.txt"
status=0
"$bin" "${cmd[@]}" > "$dir/$name.json" 2>> "$dir/$name.txt" || status=$?
echo "end: $(date -Is); uptime: $(uptime); exit $status" >> "$dir/$name.txt"
cat "$dir/$name.json"; echo
echo "recorded in $dir/$name.{txt,json} (exit $status)"
exit $status
