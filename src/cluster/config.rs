//! The validated `--cluster` settings: the Redis URL (checked, its `/DB` kept for channel
//! names) or the Redis Cluster seed nodes, and the bucket count.

/// Default bucket channels (`--cluster-buckets`).
pub const DEFAULT_BUCKETS: u32 = 1024;

/// Validated cluster settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The URL as given: `redis://[:PASSWORD@]HOST:PORT[/DB]` or
    /// `redis-cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT...]`.
    pub url: String,
    /// Redis Cluster: one `redis://` URL per seed node (empty: one Redis at `url`).
    pub nodes: Vec<String>,
    /// Bucket channels; the same on every node.
    pub buckets: u32,
    /// The URL's database number: Redis pub/sub ignores databases, so it goes into the
    /// channel names instead (clusters on one Redis with different `/DB` never mix).
    pub db: i64,
    /// `--history` (0: off): with history on, Redis numbers and keeps the messages
    /// ([`super::history`]).
    pub history_max: usize,
    /// `--history-ttl`, ms.
    pub history_ttl_ms: u64,
    /// `--cluster-mode affine`: this node's share of the buckets (`None`: broadcast).
    pub affine: Option<super::affine::Affine>,
}

impl ClusterConfig {
    /// Checks the URL and bucket count.
    ///
    /// Errors: the URL is neither a `redis://` URL the client accepts nor a
    /// `redis-cluster://` list of them (which takes no `/DB`: Redis Cluster has only database
    /// 0); buckets is 0 or over 2^20.
    pub fn new(url: &str, buckets: u32) -> anyhow::Result<ClusterConfig> {
        if buckets == 0 || buckets > 1 << 20 {
            anyhow::bail!("--cluster-buckets must be 1 to 1048576, got {buckets}");
        }
        if let Some(rest) = url.strip_prefix("redis-cluster://") {
            return Ok(ClusterConfig {
                url: url.to_string(),
                nodes: cluster_nodes(rest)
                    .map_err(|e| anyhow::anyhow!("--cluster {}: {e}", redact(url)))?,
                buckets,
                db: 0,
                history_max: 0,
                history_ttl_ms: 0,
                affine: None,
            });
        }
        if !url.starts_with("redis://") {
            anyhow::bail!("--cluster must be a redis://HOST:PORT[/DB] URL or redis-cluster://HOST:PORT[,HOST:PORT...], got {url:?}");
        }
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("--cluster {}: {e}", redact(url)))?;
        Ok(ClusterConfig {
            url: url.to_string(),
            nodes: Vec::new(),
            buckets,
            db: client.get_connection_info().redis_settings().db(),
            history_max: 0,
            history_ttl_ms: 0,
            affine: None,
        })
    }

    /// The same settings with history kept in Redis: `max` messages per id (0: off), none
    /// older than `ttl_ms`.
    pub fn with_history(mut self, max: usize, ttl_ms: u64) -> ClusterConfig {
        self.history_max = max;
        self.history_ttl_ms = ttl_ms.max(1);
        self
    }
}

impl ClusterConfig {
    /// Whether the cluster runs on Redis Cluster (`redis-cluster://`): sharded pub/sub and
    /// hash-tagged names (`uc:<B>:{<b>}`), so a bucket's channel and keys share a slot.
    pub fn is_redis_cluster(&self) -> bool {
        !self.nodes.is_empty()
    }

    /// The same settings in id-affine mode (`None`: broadcast).
    pub fn with_affine(mut self, affine: Option<super::affine::Affine>) -> ClusterConfig {
        self.affine = affine;
        self
    }
}

/// `[:PASSWORD@]HOST:PORT[,HOST:PORT...]` as one `redis://` URL per node, the password (if
/// any) on each; errors name the bad part.
fn cluster_nodes(rest: &str) -> Result<Vec<String>, String> {
    let (auth, hosts) = match rest.rfind('@') {
        Some(at) => (&rest[..=at], &rest[at + 1..]),
        None => ("", rest),
    };
    let mut nodes = Vec::new();
    for h in hosts.split(',') {
        let h = h.trim();
        if h.contains('/') {
            return Err(format!("{h:?}: Redis Cluster has no databases (no /DB)"));
        }
        let url = format!("redis://{auth}{h}");
        let ok = redis::Client::open(url.as_str()).is_ok()
            && h.rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
        if h.is_empty() || !ok {
            return Err(format!("{h:?} is not HOST:PORT"));
        }
        nodes.push(url);
    }
    Ok(nodes)
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// A random 64-bit node id (std's per-process random hash keys, the pid and the clock).
pub(super) fn random_node_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::{redact, ClusterConfig};

    #[test]
    fn config_and_redaction() {
        assert_eq!(
            ClusterConfig::new("redis://127.0.0.1:6379/0", 1024)
                .unwrap()
                .db,
            0
        );
        assert_eq!(
            ClusterConfig::new("redis://127.0.0.1:6379/3", 1024)
                .unwrap()
                .db,
            3
        );
        assert!(ClusterConfig::new("http://x", 1024).is_err());
        assert!(ClusterConfig::new("redis://127.0.0.1:6379", 0).is_err());
        assert_eq!(redact("redis://:pw@h:1/0"), "redis://***@h:1/0");
        let c =
            ClusterConfig::new("redis-cluster://:pw@127.0.0.1:7000, 127.0.0.1:7001", 64).unwrap();
        assert_eq!(
            c.nodes,
            ["redis://:pw@127.0.0.1:7000", "redis://:pw@127.0.0.1:7001"]
        );
        assert_eq!(c.db, 0);
        assert!(ClusterConfig::new("redis-cluster://127.0.0.1:7000/1", 64).is_err());
        assert!(ClusterConfig::new("redis-cluster://127.0.0.1", 64).is_err());
        assert!(ClusterConfig::new("redis-cluster://127.0.0.1:7000,", 64).is_err());
        assert!(ClusterConfig::new("redis://127.0.0.1:6379", 64)
            .unwrap()
            .nodes
            .is_empty());
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
