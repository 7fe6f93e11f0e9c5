#!/usr/bin/env bash
# Tests apply.sh against a fake `sysctl` and a fake `id` (first on PATH), so it never touches
# the running kernel: values live as files in a temporary directory. Checks --dry-run,
# the refusal to run as non-root, writes, idempotency (a second run writes nothing),
# raise-only limits, optional keys missing from the kernel, and a failed required write.
#
# Assumes: bash, coreutils, and nothing else; any user can run it.
# Usage: bash kernel-tuning/test-apply.sh   (exit 0: every check passed)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/proc"

# Fake sysctl: -n KEY prints the value; [-q] -w KEY=VALUE stores it (tabs between numbers,
# like the kernel prints vectors); a key without a file is absent; *.readonly refuses writes.
cat >"$tmp/bin/sysctl" <<'EOF'
#!/usr/bin/env bash
dir=$FAKE_PROC
case $1 in
-n) [ -f "$dir/$2" ] && cat "$dir/$2" ;;
-q)
    kv=$3
    key=${kv%%=*}
    [ -f "$dir/$key" ] || { echo "sysctl: cannot stat $key" >&2; exit 1; }
    [ -f "$dir/$key.readonly" ] && { echo "sysctl: permission denied on key \"$key\"" >&2; exit 1; }
    echo "${kv#*=}" | tr ' ' '\t' >"$dir/$key"
    echo "$key" >>"$dir/.writes"
    ;;
*) exit 2 ;;
esac
EOF
# shellcheck disable=SC2016 # expanded by the fake id, not here
printf '#!/bin/sh\necho "${FAKE_UID:-0}"\n' >"$tmp/bin/id"
chmod +x "$tmp/bin/sysctl" "$tmp/bin/id"
export PATH=$tmp/bin:$PATH FAKE_PROC=$tmp/proc

set_key() { printf '%s\n' "$2" >"$tmp/proc/$1"; }
get_key() { tr '\t' ' ' <"$tmp/proc/$1"; }
fails=0
check() { # NAME EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then echo "ok   $1"; else
        echo "FAIL $1: expected [$2], got [$3]"
        fails=$((fails + 1))
    fi
}

cat >"$tmp/test.conf" <<'EOF'
# comment
; another comment
fs.file-max = 4194304
net.core.somaxconn=65535
net.ipv4.tcp_mem = 2097152 2621440 3145728
net/ipv4/tcp_tw_reuse = 1
-net.netfilter.nf_conntrack_max = 2097152
-kernel.io_uring_disabled = 0
EOF
set_key fs.file-max 8000000
set_key net.core.somaxconn 4096
printf '287898\t383866\t575796\n' >"$tmp/proc/net.ipv4.tcp_mem"
set_key net.ipv4.tcp_tw_reuse 2
set_key kernel.io_uring_disabled 0

set +e
FAKE_UID=1000 "$here/apply.sh" "$tmp/test.conf" >"$tmp/out" 2>&1
check "non-root without --dry-run exits 2" 2 $?
FAKE_UID=1000 "$here/apply.sh" --dry-run "$tmp/test.conf" >"$tmp/out" 2>&1
check "dry run as non-root exits 0" 0 $?
check "dry run writes nothing" "" "$(cat "$tmp/proc/.writes" 2>/dev/null)"
check "dry run shows the change" 1 "$(grep -c 'net.core.somaxconn .*4096 .*-> 65535 .*dry run' "$tmp/out")"
"$here/apply.sh" "$tmp/test.conf" >"$tmp/out" 2>&1
check "apply exits 0" 0 $?
set -e
check "somaxconn written" 65535 "$(get_key net.core.somaxconn)"
check "vector written" "2097152 2621440 3145728" "$(get_key net.ipv4.tcp_mem)"
check "slash key written" 1 "$(get_key net.ipv4.tcp_tw_reuse)"
check "higher file-max kept" 8000000 "$(get_key fs.file-max)"
check "before and after printed" 1 "$(grep -c 'net.ipv4.tcp_mem .*287898 383866 575796 .*-> 2097152 2621440 3145728 .*written' "$tmp/out")"
check "optional absent key skipped" 1 "$(grep -c 'nf_conntrack_max.*skipped' "$tmp/out")"
check "three writes" 3 "$(wc -l <"$tmp/proc/.writes")"
"$here/apply.sh" "$tmp/test.conf" >"$tmp/out" 2>&1
check "second run writes nothing" 3 "$(wc -l <"$tmp/proc/.writes")"
check "second run: all already set or kept" 5 "$(grep -cE 'already set|kept' "$tmp/out")"

echo "net.core.netdev_max_backlog = 16384" >>"$tmp/test.conf"
set +e
"$here/apply.sh" "$tmp/test.conf" >"$tmp/out" 2>&1
check "required key missing exits 1" 1 $?
set_key net.core.netdev_max_backlog 1000
touch "$tmp/proc/net.core.netdev_max_backlog.readonly"
"$here/apply.sh" "$tmp/test.conf" >"$tmp/out" 2>&1
check "failed write exits 1" 1 $?
check "failed write reported" 1 "$(grep -c 'netdev_max_backlog.*FAILED' "$tmp/out")"
"$here/apply.sh" --bogus >"$tmp/out" 2>&1
check "unknown option exits 2" 2 $?
set -e

echo "test-apply: $fails failure(s)"
[ "$fails" = 0 ]
