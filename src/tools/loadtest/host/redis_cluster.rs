//! A Redis Cluster for `loadtest --nodes N --redis-shards S`: S masters, no replicas (a
//! benchmark measures the sharding, not failover), each a [`RedisGuard`] with
//! `--cluster-enabled yes` in a fresh directory under the system temp dir (its `nodes.conf`),
//! joined with `redis-cli --cluster create --cluster-replicas 0` (Debian's `redis-tools`);
//! dropping it kills every server by pid and removes the directory.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::redis_server::RedisGuard;

/// S masters of one Redis Cluster on 127.0.0.1.
pub(crate) struct RedisClusterGuard {
    /// The masters, in port order of creation.
    pub(crate) masters: Vec<RedisGuard>,
    dir: std::path::PathBuf,
}

/// `redis-cli -p PORT ARGS...`: its stdout. Errors: redis-cli missing or failing.
pub(crate) fn cli(port: u16, args: &[&str]) -> Result<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("redis-cli not found; install Debian's package: apt-get install -y redis-tools")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_pair() -> Result<u16> {
    for _ in 0..100 {
        let p = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if p < 55000 && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return Ok(p);
        }
    }
    bail!("no free port pair (port and port + 10000) for a Redis Cluster node")
}

impl RedisClusterGuard {
    /// Starts `s` (3 or more) masters, creates the cluster and waits (at most 20 s) until
    /// each says `cluster_state:ok`. Errors: a server did not start, the create failed.
    pub(crate) fn start(s: usize) -> Result<RedisClusterGuard> {
        if s < 3 {
            bail!("--redis-shards must be 0 (one Redis) or at least 3 (Redis Cluster's minimum of masters)");
        }
        let dir = std::env::temp_dir().join(format!("uc-loadtest-rcluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut g = RedisClusterGuard {
            masters: Vec::new(),
            dir,
        };
        for _ in 0..s {
            let port = free_pair()?;
            let conf = format!("nodes-{port}.conf");
            let flags = ["--cluster-enabled", "yes", "--cluster-config-file", &conf];
            g.masters
                .push(RedisGuard::start_with(port, &flags, Some(&g.dir))?);
        }
        let addrs: Vec<String> = g
            .masters
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .context(
                "redis-cli not found; install Debian's package: apt-get install -y redis-tools",
            )?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let t0 = Instant::now();
        while !g.masters.iter().all(|m| {
            cli(m.port, &["CLUSTER", "INFO"]).is_ok_and(|i| i.contains("cluster_state:ok"))
        }) {
            if t0.elapsed() > Duration::from_secs(20) {
                bail!("the Redis Cluster was not ok within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(g)
    }

    /// The `--cluster` URL: every master as a seed.
    pub(crate) fn url(&self) -> String {
        let seeds: Vec<String> = self
            .masters
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.port))
            .collect();
        format!("redis-cluster://{}", seeds.join(","))
    }

    /// `SPUBLISH` calls of each master so far (`INFO commandstats`; the publish script's
    /// calls count, one per bucket payload).
    pub(crate) fn spublish_calls(&self) -> Vec<u64> {
        self.masters
            .iter()
            .map(|m| {
                let info = cli(m.port, &["INFO", "commandstats"]).unwrap_or_default();
                info.lines()
                    .find_map(|l| l.strip_prefix("cmdstat_spublish:calls="))
                    .and_then(|r| r.split(',').next()?.parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }
}

impl Drop for RedisClusterGuard {
    fn drop(&mut self) {
        self.masters.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
