import os, socket, struct, subprocess, sys, time, json, urllib.request
BIN, backend, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = subprocess.Popen(["bash", "-c", f"ulimit -n 256; exec {BIN} serve --listen 127.0.0.1:0 --publish-listen 127.0.0.1:0 --shards 2 --backend {backend}"],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="warn"))
line = p.stdout.readline().decode().split()
S = line[1].split("=")[1]; P = line[2].split("=")[1]
sh, sp = S.rsplit(":", 1); ph, pp = P.rsplit(":", 1)
def fds(): return len(os.listdir(f"/proc/{p.pid}/fd"))
def stats(): return json.loads(urllib.request.urlopen(f"http://{P}/stats", timeout=5).read())
time.sleep(0.3); base = fds()
def loop(n, what):
    t = time.time()
    for i in range(n):
        s = socket.create_connection((sh, int(sp)), timeout=5)
        s.sendall(b"GET /test/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while len(got) < 12:
            d = s.recv(12 - len(got))
            assert d, f"{what}: request {i} closed"
            got += d
        assert got == b"HTTP/1.1 200", (what, i, got)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); s.close()
    print(f"{backend}: {what}: {n} sequential subscribes answered in {time.time() - t:.1f} s; server fds {fds()} (idle baseline {base})")
loop(N, "before EMFILE")
cl = [socket.create_connection((sh, int(sp))) for _ in range(300)] + [socket.create_connection((ph, int(pp))) for _ in range(100)]
time.sleep(1); print(f"{backend}: EMFILE episode: 400 idle clients, server fds {fds()} (RLIMIT_NOFILE 256)")
for s in cl: s.close()
loop(N, "after EMFILE")
t = time.time()
while fds() > base and time.time() - t < 3: time.sleep(0.05)
st = stats()
print(f"{backend}: after: server fds {fds()} (baseline {base}), connections {st['connections']}, accept_rearmed {st['accept_rearmed']}")
p.terminate(); print(f"{backend}: exit status {p.wait()}")
