//! Id-affine cluster mode (`--cluster-mode affine`): each of N nodes owns a share of the
//! bucket channels, subscribes only to those, and answers a subscriber of an id whose bucket
//! another node owns with a `307 Temporary Redirect` to that node's public URL.
//!
//! The owner of bucket `b` is `jump(b, N)`, the jump consistent hash of Lamping and Veach
//! ("A Fast, Minimal Memory, Consistent Hash Algorithm", 2014): the same on every node, and
//! going from N to N+1 nodes moves only about 1/(N+1) of the buckets (all to the new node).
//! A multi-id subscribe whose ids all belong to one node is redirected to it (or served);
//! one whose ids span nodes is refused with `409 Conflict` (a node receives only its own
//! buckets' messages, so it could not serve the others): clients subscribe to each owner's
//! ids separately.

use crate::id::Id;

use super::Cluster;

/// The `serve` flags of id-affine mode (flattened into `ServeArgs`; config-file keys of the
/// same names).
#[derive(Debug, Clone, clap::Args)]
pub struct AffineArgs {
    /// How ids are spread over the cluster's nodes: `broadcast` (every node serves every
    /// id) or `affine` (node I owns the buckets b with jump(b, N) == I, jump consistent
    /// hash, and subscribes only to those; a subscriber of another node's id gets a 307 to
    /// that node's URL, one whose ids span nodes a 409).
    #[arg(long, value_enum, default_value_t = ClusterMode::Broadcast)]
    pub cluster_mode: ClusterMode,
    /// Affine mode: how many nodes the cluster has (N, the same on every node).
    #[arg(long, default_value_t = 1)]
    pub cluster_nodes: u32,
    /// Affine mode: this node's index, 0 to N-1.
    #[arg(long, default_value_t = 0)]
    pub cluster_node_index: u32,
    /// Affine mode: each node's public base URL, by index, comma-separated
    /// (`http://10.0.0.2:8080,http://10.0.0.3:8080`): the prefix of the 307s' `Location`.
    #[arg(long, default_value = "")]
    pub cluster_node_urls: String,
}

impl AffineArgs {
    /// The validated affine settings (`None` in broadcast mode), given `--cluster`.
    ///
    /// Errors: affine mode without `--cluster`; those of [`Affine::new`]; in broadcast mode,
    /// any affine flag set (it would be ignored: a node meant to be affine would quietly
    /// serve every id).
    pub fn resolve(&self, cluster: Option<&str>) -> anyhow::Result<Option<Affine>> {
        if self.cluster_mode == ClusterMode::Broadcast {
            let set = [
                (self.cluster_nodes != 1, "--cluster-nodes"),
                (self.cluster_node_index != 0, "--cluster-node-index"),
                (!self.cluster_node_urls.is_empty(), "--cluster-node-urls"),
            ];
            if let Some((_, flag)) = set.iter().find(|(on, _)| *on) {
                anyhow::bail!("{flag} is for --cluster-mode affine (broadcast mode ignores it)");
            }
            return Ok(None);
        }
        if cluster.is_none_or(str::is_empty) {
            anyhow::bail!("--cluster-mode affine needs --cluster");
        }
        let (n, i) = (self.cluster_nodes, self.cluster_node_index);
        Affine::new(n, i, &self.cluster_node_urls).map(Some)
    }
}

impl Cluster {
    /// Whether this node subscribes to bucket `b`: always in broadcast mode and for the
    /// friends channel, else when it owns `b` (`affine`).
    pub fn owns(&self, b: u32) -> bool {
        b == self.friends_bucket() || self.cfg.affine.as_ref().is_none_or(|a| a.owns(b))
    }

    /// In affine mode, where a subscriber of `ids` must go instead: `Ok(None)` if this node
    /// owns the first id's bucket and all the others', `Ok(Some(url))` (the base URL of the
    /// owner of the first id) if another node owns the first id, `Err(())` if the ids span
    /// owners (`affine`). Always `Ok(None)` in broadcast mode.
    #[allow(clippy::result_unit_err)]
    pub fn redirect_for(&self, ids: &[Id]) -> Result<Option<&str>, ()> {
        let (Some(a), Some(first)) = (&self.cfg.affine, ids.first()) else {
            return Ok(None);
        };
        let owner = a.owner(self.bucket(first));
        if ids[1..].iter().any(|id| a.owner(self.bucket(id)) != owner) {
            return Err(());
        }
        Ok((owner != a.index).then(|| a.urls[owner as usize].as_ref()))
    }
}

/// `--cluster-mode`: how ids are spread over the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ClusterMode {
    /// Every node serves every id and subscribes to the buckets of its subscribers' ids
    /// (today's behaviour, the default).
    #[default]
    Broadcast,
    /// Each node owns a share of the buckets; subscribers of other ids get a 307.
    Affine,
}

/// The validated id-affine settings of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affine {
    /// This node's index, 0 to `urls.len() - 1`.
    pub index: u32,
    /// Public base URL of each node (`http://HOST:PORT`, no trailing `/`), by index.
    pub urls: Vec<Box<str>>,
}

impl Affine {
    /// Checks `--cluster-nodes` (`nodes`), `--cluster-node-index` (`index`) and
    /// `--cluster-node-urls` (`urls`, comma-separated, one per node).
    ///
    /// Errors name the flag: nodes 0 or over 4096, index not below nodes, a URL count other
    /// than nodes, a URL that is not `http://` or `https://` or holds a control character,
    /// a space, or a path.
    pub fn new(nodes: u32, index: u32, urls: &str) -> anyhow::Result<Affine> {
        if nodes == 0 || nodes > 4096 {
            anyhow::bail!("--cluster-nodes must be 1 to 4096 in affine mode, got {nodes}");
        }
        if index >= nodes {
            anyhow::bail!(
                "--cluster-node-index must be below --cluster-nodes ({nodes}), got {index}"
            );
        }
        let urls: Vec<Box<str>> = urls
            .split(',')
            .map(|u| u.trim().trim_end_matches('/'))
            .filter(|u| !u.is_empty())
            .map(Box::from)
            .collect();
        if urls.len() != nodes as usize {
            anyhow::bail!(
                "--cluster-node-urls must hold {nodes} URLs (one per node), got {}",
                urls.len()
            );
        }
        for u in &urls {
            let rest = u
                .strip_prefix("http://")
                .or_else(|| u.strip_prefix("https://"));
            let bad = u.bytes().any(|c| c <= b' ' || c == 0x7f);
            if bad || rest.is_none_or(|r| r.is_empty() || r.contains('/')) {
                anyhow::bail!("--cluster-node-urls: {u:?} is not an http://HOST:PORT base URL");
            }
        }
        Ok(Affine { index, urls })
    }

    /// The node owning bucket `b`.
    pub fn owner(&self, b: u32) -> u32 {
        jump(u64::from(b), self.urls.len() as u32)
    }

    /// Whether this node owns bucket `b`.
    pub fn owns(&self, b: u32) -> bool {
        self.owner(b) == self.index
    }
}

/// The bucket of `id` among `buckets` (`--cluster-buckets`): a fixed hash, the same on
/// every node. The id's stable hash is mixed again (MurmurHash3's finaliser) first: its bits
/// alone follow consecutive numeric ids too regularly (a block of ids on one node and the
/// next block on another held the very same buckets). `buckets` must be at least 1.
pub fn bucket_of(id: &Id, buckets: u32) -> u32 {
    let mut h = id.stable_hash();
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % u64::from(buckets)) as u32
}

/// Jump consistent hash (Lamping and Veach 2014, the paper's code): the bucket in
/// `0..n` of `key`; `n` must be at least 1.
pub fn jump(mut key: u64, n: u32) -> u32 {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < i64::from(n) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

/// The origin-form target (path and query) of the request line in `head`, for a
/// redirect's `Location`: the absolute form (RFC 9112 section 3.2.2) loses its scheme and
/// authority. `None` if the line cannot be read (the parser accepted it, so never in
/// practice).
pub fn target_of(head: &[u8]) -> Option<&[u8]> {
    let line = head.split(|&c| c == b'\n').next()?;
    let mut parts = line.split(|&c| c == b' ');
    let target = parts.nth(1)?;
    if target.first() == Some(&b'/') {
        return Some(target);
    }
    let after = target.windows(3).position(|w| w == b"://")? + 3;
    let path = target[after..].iter().position(|&c| c == b'/')?;
    Some(&target[after + path..])
}

/// Appends a complete `307 Temporary Redirect` (RFC 9110 section 15.4.8) to
/// `<base><target>`, with no body; the connection is closed after it.
pub fn redirect(out: &mut Vec<u8>, base: &str, target: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: ");
    out.extend_from_slice(base.as_bytes());
    out.extend_from_slice(target);
    out.extend_from_slice(b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

/// Appends a complete `409 Conflict` for a subscribe whose ids belong to different nodes;
/// the connection is closed after it.
pub fn span_conflict(out: &mut Vec<u8>) {
    const TEXT: &str = "ids of different cluster nodes: subscribe to each node's ids separately\n";
    let _ = std::io::Write::write_fmt(
        out,
        format_args!(
            "HTTP/1.1 409 Conflict\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{TEXT}",
            TEXT.len()
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::{jump, redirect, target_of, Affine, AffineArgs, ClusterMode};

    #[test]
    fn jump_hash_is_balanced_and_moves_little() {
        let mut per = [0u32; 4];
        for b in 0..1024 {
            per[jump(b, 4) as usize] += 1;
        }
        assert!(per.iter().all(|&n| (200..=312).contains(&n)), "{per:?}");
        // From 4 to 5 nodes, a bucket either stays or moves to the new node.
        let moved = (0..1024).filter(|&b| jump(b, 5) != jump(b, 4)).count();
        assert!((0..1024).all(|b| jump(b, 5) == jump(b, 4) || jump(b, 5) == 4));
        assert!((150..=260).contains(&moved), "{moved}");
        assert!((0..100).all(|b| jump(b, 1) == 0));
    }

    #[test]
    fn flags_are_checked() {
        let a = Affine::new(2, 1, "http://a:1, http://b:2/").unwrap();
        assert_eq!(a.urls[1].as_ref(), "http://b:2");
        assert!(a.owns(3) == (jump(3, 2) == 1));
        for (n, i, u, flag) in [
            (0, 0, "", "--cluster-nodes"),
            (2, 2, "http://a,http://b", "--cluster-node-index"),
            (2, 0, "http://a", "--cluster-node-urls"),
            (1, 0, "ftp://a", "--cluster-node-urls"),
            (1, 0, "http://a/x", "--cluster-node-urls"),
        ] {
            let e = Affine::new(n, i, u).unwrap_err().to_string();
            assert!(e.starts_with(flag), "{e}");
        }
        let mut args = AffineArgs {
            cluster_mode: ClusterMode::Affine,
            cluster_nodes: 1,
            cluster_node_index: 0,
            cluster_node_urls: "http://a:1".into(),
        };
        let e = args.resolve(None).unwrap_err().to_string();
        assert_eq!(e, "--cluster-mode affine needs --cluster");
        assert!(args.resolve(Some("redis://h:1")).unwrap().is_some());
        args.cluster_mode = ClusterMode::Broadcast;
        let e = args.resolve(None).unwrap_err().to_string();
        assert_eq!(
            e,
            "--cluster-node-urls is for --cluster-mode affine (broadcast mode ignores it)"
        );
        args.cluster_node_urls.clear();
        assert_eq!(args.resolve(None).unwrap(), None);
        args.cluster_nodes = 3;
        let e = args.resolve(Some("redis://h:1")).unwrap_err().to_string();
        assert!(e.starts_with("--cluster-nodes is for"), "{e}");
    }

    #[test]
    fn location_keeps_path_and_query() {
        assert_eq!(
            target_of(b"GET /sub/7?a=1 HTTP/1.1\r\n"),
            Some(&b"/sub/7?a=1"[..])
        );
        assert_eq!(
            target_of(b"GET http://h:1/test/7 HTTP/1.1\r\n"),
            Some(&b"/test/7"[..])
        );
        let mut out = Vec::new();
        redirect(&mut out, "http://n1:80", b"/sub/7");
        assert_eq!(
            out,
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://n1:80/sub/7\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
}
