#!/usr/bin/env bash
# Applies a sysctl.d conf (default: sysctl.d/90-uring-comet.conf beside this script) to the
# running kernel, one `sysctl -w KEY=VALUE` per key, and prints each value before and after.
#
# Assumes: Linux with procps `sysctl` on PATH (systemd is not needed); root to write (with
# --dry-run it only reads, as any user); the sysctl.d(5) format: `key = value` lines, `#` or
# `;` comment lines, and a leading `-` on a key that may be missing on this kernel (its
# module not loaded, or too old), which is then skipped, and whose write may fail.
# net.* keys belong to the network namespace the script runs in: run it where the server
# runs (on the host, not in a container that has its own namespace).
#
# Idempotent: a key already at its value is not written, so a second run writes nothing.
# Limits (file-max, somaxconn, ...) are only raised: a box already above the conf keeps its
# value. The change lasts until reboot; for boot, copy the conf to /etc/sysctl.d/.
#
# Usage: kernel-tuning/apply.sh [--dry-run] [CONF]
# Exit status: 0 every key is at its value (with --dry-run: could be set); 1 a write failed
# or a required key is missing; 2 usage error, unreadable conf, or not root.
set -euo pipefail

# Keys that are capacities: never lowered.
raise_only=" fs.file-max fs.nr_open net.core.somaxconn net.ipv4.tcp_max_syn_backlog
  net.core.netdev_max_backlog net.ipv4.tcp_max_orphans net.ipv4.tcp_max_tw_buckets
  net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_buckets "

here=$(cd "$(dirname "$0")" && pwd)
dry=0
conf=$here/sysctl.d/90-uring-comet.conf
for arg in "$@"; do
    case $arg in
    --dry-run) dry=1 ;;
    -h | --help)
        sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//;p}' "$0"
        exit 0
        ;;
    -*)
        echo "apply.sh: unknown option $arg (see --help)" >&2
        exit 2
        ;;
    *) conf=$arg ;;
    esac
done
if [ ! -r "$conf" ]; then
    echo "apply.sh: cannot read $conf" >&2
    exit 2
fi
if [ "$dry" = 0 ] && [ "$(id -u)" != 0 ]; then
    echo "apply.sh: writing sysctls needs root (running as uid $(id -u)): run it with sudo, or" \
        "with --dry-run to see what it would change" >&2
    exit 2
fi

# One line of words separated by single spaces (sysctl prints vectors with tabs).
norm() { echo "$*" | tr -s '[:space:]' ' ' | sed 's/^ //; s/ $//'; }

# KEY BEFORE AFTER STATUS, aligned.
show() { printf '%-36s %-26s -> %-26s %s\n' "$@"; }

failed=0
written=0
printf '%-36s %-26s    %-26s %s\n' KEY BEFORE AFTER STATUS
while IFS= read -r line || [ -n "$line" ]; do
    line=$(norm "$line")
    case $line in "" | "#"* | ";"*) continue ;; esac
    optional=0
    if [ "${line#-}" != "$line" ]; then
        optional=1
        line=${line#-}
    fi
    key=$(norm "${line%%=*}")
    key=${key//\//.}
    want=$(norm "${line#*=}")
    if ! before=$(sysctl -n "$key" 2>/dev/null); then
        if [ "$optional" = 1 ]; then
            show "$key" "(absent)" "(absent)" "skipped: not on this kernel"
        else
            show "$key" "(absent)" "(absent)" "MISSING: required key"
            failed=1
        fi
        continue
    fi
    before=$(norm "$before")
    if [ "$before" = "$want" ]; then
        show "$key" "$before" "$before" "already set"
        continue
    fi
    if [[ "$raise_only" == *" $key "* ]] && [[ "$before" =~ ^[0-9]+$ ]] &&
        [[ "$want" =~ ^[0-9]+$ ]] && [ "$before" -gt "$want" ]; then
        show "$key" "$before" "$before" "kept: above the conf's $want"
        continue
    fi
    if [ "$dry" = 1 ]; then
        show "$key" "$before" "$want" "dry run: not written"
        continue
    fi
    if err=$(sysctl -q -w "$key=$want" 2>&1 >/dev/null); then
        after=$(norm "$(sysctl -n "$key")")
        written=$((written + 1))
        if [ "$after" = "$want" ]; then
            show "$key" "$before" "$after" "written"
        else
            show "$key" "$before" "$after" "written, but the kernel holds another value"
            failed=1
        fi
    elif [ "$optional" = 1 ]; then
        show "$key" "$before" "$before" "not written (optional): $err"
    else
        show "$key" "$before" "$before" "FAILED: $err"
        failed=1
    fi
done <"$conf"

if [ "$dry" = 1 ]; then
    echo "dry run: nothing written ($conf)"
elif [ "$failed" = 0 ]; then
    echo "done: $written key(s) written from $conf; check with: uring-comet check-system"
fi
if [ "$failed" = 1 ]; then
    echo "apply.sh: some keys are not at their value (see above)" >&2
    exit 1
fi
