//! A throwaway Redis Cluster for the tests: 3 masters and 3 replicas, each a
//! `redis-server --cluster-enabled yes` child on a free loopback port (and its cluster bus on
//! port + 10000), in its own temporary directory (the `nodes.conf` files), nothing saved;
//! joined with `redis-cli --cluster create --cluster-replicas 1`. Failover is fast:
//! `--cluster-node-timeout 1000` (ms). Every server is ended through its own `Child` handle
//! (kill by pid, then reaped), on drop too. `scripts/test-deps.sh` installs Debian's
//! `redis-server` and `redis-tools` (`redis-cli`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::free_port;

/// The cluster's node timeout (ms): a master silent this long is failed over.
pub(crate) const NODE_TIMEOUT_MS: u64 = 1000;

/// One server of the cluster.
struct Node {
    port: u16,
    child: Option<Child>,
}

/// 3 masters + 3 replicas on 127.0.0.1.
pub(crate) struct RedisCluster {
    nodes: Vec<Node>,
    dir: std::path::PathBuf,
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_pair() -> u16 {
    loop {
        let p = free_port();
        if p < 55000 && std::net::TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

/// `redis-cli -p PORT ARGS...`: its stdout (raw, one reply element per line).
pub(crate) fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect(
            "redis-cli missing: run scripts/test-deps.sh (Debian: apt-get install redis-tools)",
        );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl RedisCluster {
    /// Starts the six servers, creates the cluster and waits (at most 30 s) until every
    /// node says `cluster_state:ok` and knows 3 masters with a replica each.
    pub(crate) fn start() -> RedisCluster {
        let dir = std::env::temp_dir().join(format!(
            "uc-rcluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = RedisCluster {
            nodes: Vec::new(),
            dir,
        };
        for _ in 0..6 {
            let port = free_pair();
            let mut n = Node { port, child: None };
            c.spawn(&mut n);
            c.nodes.push(n);
        }
        for n in &c.nodes {
            let t0 = Instant::now();
            while cli(n.port, &["PING"]).trim() != "PONG" {
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "redis-server {} up",
                    n.port
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let addrs: Vec<String> = c
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli missing: run scripts/test-deps.sh");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        c.wait_ok(Duration::from_secs(30));
        c
    }

    fn spawn(&self, n: &mut Node) {
        let child = Command::new("redis-server")
            .args(["--port", &n.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &format!("nodes-{}.conf", n.port)])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            // A replica that never synced cannot be promoted; Redis 7 delays the first
            // (diskless) sync by 5 s unless told not to.
            .args(["--repl-diskless-sync-delay", "0"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server missing: run scripts/test-deps.sh");
        n.child = Some(child);
    }

    /// Waits until every live node says `cluster_state:ok`, 3 masters serve all slots, and
    /// every replica's link to its master is up (synced: only then can it be promoted).
    pub(crate) fn wait_ok(&self, within: Duration) {
        let t0 = Instant::now();
        loop {
            let ok = self.live().all(|p| {
                let info = cli(p, &["CLUSTER", "INFO"]);
                let repl = cli(p, &["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && (repl.contains("role:master") || repl.contains("master_link_status:up"))
            }) && self.masters().len() == 3;
            if ok {
                return;
            }
            assert!(
                t0.elapsed() < within,
                "Redis Cluster not ok within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn live(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
    }

    /// `redis-cluster://` with every master and replica as a seed, the form `--cluster` takes.
    pub(crate) fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis-cluster://{}", seeds.join(","))
    }

    /// The ports of the masters serving slots, as a live node sees them.
    pub(crate) fn masters(&self) -> Vec<u16> {
        let Some(p) = self.live().next() else {
            return Vec::new();
        };
        let mut m: Vec<u16> = cli(p, &["CLUSTER", "NODES"])
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail") && l.split(' ').count() > 8)
            .filter_map(|l| l.split(' ').nth(1)?.split(['@', ':']).nth(1)?.parse().ok())
            .collect();
        m.sort_unstable();
        m
    }

    /// The port of the master serving `slot`.
    pub(crate) fn owner_of(&self, slot: u16) -> u16 {
        let p = self.live().next().expect("a live node");
        let nodes = cli(p, &["CLUSTER", "NODES"]);
        for l in nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
        {
            let f: Vec<&str> = l.split(' ').collect();
            for r in f.iter().skip(8) {
                let (a, b) = match r.split_once('-') {
                    Some((a, b)) => (a.parse::<u16>(), b.parse::<u16>()),
                    None => (r.parse::<u16>(), r.parse::<u16>()),
                };
                if let (Ok(a), Ok(b)) = (a, b) {
                    if (a..=b).contains(&slot) {
                        return f[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
                    }
                }
            }
        }
        panic!("no master serves slot {slot}: {nodes}");
    }

    /// The node id of the server on `port`.
    pub(crate) fn id_of(&self, port: u16) -> String {
        cli(port, &["CLUSTER", "MYID"]).trim().to_string()
    }

    /// Kills the server on `port` (SIGKILL, by its pid) and reaps it.
    pub(crate) fn kill(&mut self, port: u16) {
        let n = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of ours");
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Moves `slot` from its master to master `to`, the way `redis-cli --cluster reshard`
    /// does (Redis docs, "Live reconfiguration"): `IMPORTING` on the target, `MIGRATING` on
    /// the source, every key moved with `MIGRATE`, then `SETSLOT ... NODE` on the target, the
    /// source and every other master.
    pub(crate) fn migrate_slot(&self, slot: u16, to: u16) {
        let from = self.owner_of(slot);
        assert_ne!(from, to, "slot {slot} is on {to} already");
        let (from_id, to_id) = (self.id_of(from), self.id_of(to));
        let s = slot.to_string();
        assert_eq!(
            cli(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]).trim(),
            "OK"
        );
        assert_eq!(
            cli(from, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]).trim(),
            "OK"
        );
        loop {
            let keys = cli(from, &["CLUSTER", "GETKEYSINSLOT", &s, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1"];
            let tp = to.to_string();
            args.extend([tp.as_str(), "", "0", "5000", "KEYS"]);
            args.extend(keys);
            let r = cli(from, &args);
            assert!(r.trim() == "OK", "MIGRATE: {r}");
        }
        for p in [to, from] {
            assert_eq!(
                cli(p, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]).trim(),
                "OK"
            );
        }
        for p in self
            .masters()
            .into_iter()
            .filter(|p| *p != to && *p != from)
        {
            cli(p, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
        }
    }
}

/// The Redis Cluster hash slot of `key` (the server's own computation).
pub(crate) fn slot_of(key: &str) -> u16 {
    uring_comet::cluster::slots::slot_of(key.as_bytes())
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
