#!/usr/bin/env python3
"""Redis CPU per publish of a bare SPUBLISH against the backlog script (src/cluster/backlog.rs,
UC_PUB), on a throwaway redis-server on 127.0.0.1:46201 with one SSUBSCRIBEd client, through
redis-benchmark (200,000 publishes, 4 clients, pipeline 16) at 200 and 2,000-byte payloads.
Redis CPU is `INFO cpu` (user + sys) before and after. Run it on a quiet box:
    python3 scripts/redis-backlog-cost.py > loadtest/runs/<date>-<host>/<name>.txt
It starts and stops its own redis-server (by pid) and needs redis-server, redis-cli and
redis-benchmark (Debian: redis-server, redis-tools)."""
import os, re, subprocess, sys, time

P = "46201"
HERE = os.path.dirname(os.path.abspath(__file__))


def cli(*a):
    return subprocess.run(["redis-cli", "-p", P, *a], capture_output=True, text=True).stdout.strip()


def cpu():
    i = cli("INFO", "cpu")
    return sum(float(re.search(rf"{k}:([\d.]+)", i).group(1)) for k in ("used_cpu_user", "used_cpu_sys"))


def main():
    src = open(os.path.join(HERE, "..", "src", "cluster", "backlog.rs")).read()
    i = src.index("local function uc_pub")
    j = src.index('end\n";', i) + 4
    script = src[i:j] + "\nreturn uc_pub(ARGV[1], ARGV[2])\n"
    server = subprocess.Popen(["redis-server", "--port", P, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL)
    try:
        while cli("PING") != "PONG":
            time.sleep(0.05)
        sha = cli("SCRIPT", "LOAD", script)
        sub = subprocess.Popen(["redis-cli", "-p", P, "SSUBSCRIBE", "uc:1024:{5}"], stdout=subprocess.DEVNULL)
        time.sleep(0.3)
        print("load average before:", open("/proc/loadavg").read().strip())
        for size in (200, 2000):
            payload = "x" * size
            for _ in range(2):
                for name, args in [("SPUBLISH", ["SPUBLISH", "uc:1024:{5}", payload]),
                                   ("EVALSHA uc_pub", ["EVALSHA", sha, "1", "uc:1024:{5}:s", "uc:1024:{5}", payload])]:
                    n = 200000
                    c0 = cpu()
                    subprocess.run(["redis-benchmark", "-p", P, "-n", str(n), "-c", "4", "-P", "16", "-q", *args],
                                   capture_output=True, check=True)
                    print(f"payload {size} B, {name}: {1e6 * (cpu() - c0) / n:.2f} us Redis CPU per publish")
        sub.kill()
        print("backlog after:", cli("LLEN", "uc:1024:{5}:b"), "entries,", cli("MEMORY", "USAGE", "uc:1024:{5}:b"),
              "bytes, TTL", cli("PTTL", "uc:1024:{5}:b"), "ms")
        print("load average after:", open("/proc/loadavg").read().strip())
        print(subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip())
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
