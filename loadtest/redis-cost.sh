#!/usr/bin/env bash
# What history in cluster mode costs Redis per message (DESIGN.md section 10): starts its own
# redis-server (Debian's package) and one `serve --cluster` node on free loopback ports,
# publishes IDS x PER messages of SIZE bytes through the node (pipelined HTTP, every reply
# checked), and prints Redis' used_memory growth and CPU time per message and per id, and
# INFO commandstats. Both processes are ended by pid. Usage:
#   loadtest/redis-cost.sh IDS PER SIZE [HISTORY]     e.g. loadtest/redis-cost.sh 10000 10 100
# UC_BIN names the uring-comet binary (default: target/release/uring-comet, built first).
set -euo pipefail
cd "$(dirname "$0")/.."
ids=$1; per=$2; size=$3; hist=${4:-32}
if [ -z "${UC_BIN:-}" ]; then cargo build --release --quiet; fi
bin=${UC_BIN:-target/release/uring-comet}
dir=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rport=$(free_port); sport=$(free_port); pport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
rpid=$(cat "$dir/redis.pid")
"$bin" serve --listen "127.0.0.1:$sport" --publish-listen "127.0.0.1:$pport" \
  --cluster "redis://127.0.0.1:$rport" --history "$hist" >"$dir/node.out" 2>"$dir/node.err" </dev/null &
npid=$!
trap 'kill $npid 2>/dev/null; kill $rpid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q '^LISTEN' "$dir/node.out" 2>/dev/null && break; sleep 0.1; done
mem() { redis-cli -p "$rport" info memory | tr -d '\r' | awk -F: '/^used_memory:/ {print $2}'; }
cpu() { awk '{print $14 + $15}' "/proc/$rpid/stat"; }
m0=$(mem); c0=$(cpu)
python3 - "$pport" "$ids" "$per" "$size" <<'PY'
import socket, sys
port, ids, per, size = (int(a) for a in sys.argv[1:])
s = socket.create_connection(("127.0.0.1", port))
body = b"x" * size
sent = got = 0
buf = b""
def drain(upto):
    global got, buf
    while got < upto:
        d = s.recv(1 << 16)
        if not d:
            sys.exit("the node closed the connection")
        buf += d
        while True:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                break
            head = buf[:i].decode()
            cl = int([l.split(":")[1] for l in head.split("\r\n") if l.lower().startswith("content-length")][0])
            if len(buf) < i + 4 + cl:
                break
            if not head.startswith("HTTP/1.1 200"):
                sys.exit("publish refused: " + head.splitlines()[0])
            buf = buf[i + 4 + cl:]
            got += 1
batch = []
for r in range(per):
    for i in range(ids):
        batch.append(b"POST /send/u%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (i, size, body))
        if len(batch) == 200:
            s.sendall(b"".join(batch)); sent += len(batch); batch = []
            drain(max(0, sent - 400))
if batch:
    s.sendall(b"".join(batch)); sent += len(batch)
drain(sent)
PY
sleep 0.5
m1=$(mem); c1=$(cpu); n=$((ids * per)); tck=$(getconf CLK_TCK)
echo "redis-cost: ids=$ids per_id=$per msg_bytes=$size history=$hist messages=$n keys=$(redis-cli -p "$rport" dbsize)"
echo "redis-cost: used_memory +$((m1 - m0)) B = $(( (m1 - m0) / n )) B per message, $(( (m1 - m0) / ids )) B per id"
python3 -c "print('redis-cost: redis-server CPU %.2f s = %.2f us per message' % (($c1 - $c0) / $tck, ($c1 - $c0) / $tck * 1e6 / $n))"
redis-cli -p "$rport" info commandstats | tr -d '\r' | grep -E '^cmdstat_(evalsha|publish):' | sed 's/^/redis-cost: /'
echo "redis-cost: load average $(cut -d' ' -f1-3 /proc/loadavg)"
