//! Phase 1 of `loadtest --nodes N`: the Redis the nodes share (one redis-server, or with
//! `--redis-shards S` a Redis Cluster of S masters) and the N nodes, each connected.

use anyhow::{bail, Result};

use super::{placement, say};
use crate::tools::loadtest::cli::MainArgs;
use crate::tools::loadtest::host::child::ServerGuard;
use crate::tools::loadtest::host::proc::cpu_seconds;
use crate::tools::loadtest::host::redis_cluster::RedisClusterGuard;
use crate::tools::loadtest::host::redis_server::RedisGuard;
use crate::tools::loadtest::wire::answer;

/// The Redis of a run.
pub(super) enum Redis {
    /// One redis-server (`redis://`).
    One(RedisGuard),
    /// A Redis Cluster (`redis-cluster://`, sharded pub/sub).
    Sharded(RedisClusterGuard),
}

impl Redis {
    fn url(&self) -> String {
        match self {
            Redis::One(r) => r.url(),
            Redis::Sharded(c) => c.url(),
        }
    }

    /// CPU seconds of each Redis process so far.
    pub(super) fn cpu_seconds(&self) -> Vec<f64> {
        let one = |r: &RedisGuard| cpu_seconds(r.pid).unwrap_or(0.0);
        match self {
            Redis::One(r) => vec![one(r)],
            Redis::Sharded(c) => c.masters.iter().map(one).collect(),
        }
    }

    /// `SPUBLISH` calls of each master so far (empty on one Redis).
    pub(super) fn spublish_calls(&self) -> Vec<u64> {
        match self {
            Redis::One(_) => Vec::new(),
            Redis::Sharded(c) => c.spublish_calls(),
        }
    }
}

/// Redis and `n` nodes with `--cluster`, each connected to it (its server log, if asked
/// for, is `FILE.node<k>`). Errors: a child did not start, or a node is not `cluster_up`.
pub(super) fn start_cluster(a: &MainArgs, n: usize) -> Result<(Redis, Vec<ServerGuard>)> {
    let redis = if a.redis_shards == 0 {
        let r = RedisGuard::start()?;
        say(&format!("redis-server pid {} on {}", r.pid, r.url()));
        Redis::One(r)
    } else {
        let c = RedisClusterGuard::start(usize::from(a.redis_shards))?;
        let pids: Vec<String> = c.masters.iter().map(|m| m.pid.to_string()).collect();
        say(&format!(
            "Redis Cluster of {} masters (pids {}) on {}",
            pids.len(),
            pids.join(", "),
            c.url()
        ));
        Redis::Sharded(c)
    };
    let (bin, args) = a
        .server
        .command(vec!["--cluster".into(), redis.url()], a.backend)?;
    let mut servers = Vec::with_capacity(n);
    for k in 0..n {
        let log = a.server.server_log.as_ref().map(|p| {
            let mut p = p.clone().into_os_string();
            p.push(format!(".node{k}"));
            std::path::PathBuf::from(p)
        });
        let mut args = args.clone();
        args.extend(placement::node_args(a.cluster_mode, n, k));
        let s = ServerGuard::start(&bin, &args, log.as_ref())?;
        say(&format!(
            "node {k}: pid {}, subscribers on {}, publish on {}",
            s.pid, s.sub_addr, s.pub_addr
        ));
        servers.push(s);
    }
    for (k, s) in servers.iter().enumerate() {
        let up = answer::fetch_stats_keys(s.pub_addr, &["cluster_up"])?
            .iter()
            .any(|(key, v)| key == "cluster_up" && *v == 1);
        if !up {
            bail!("node {k} is not connected to Redis (cluster_up is not 1 in its /stats)");
        }
    }
    Ok((redis, servers))
}
