//! Server settings: the `serve` flags as parsed ([`ServeArgs`]) and the validated values the
//! shards run with ([`ServerConfig`]); [`file`](mod@file): the same flags from a TOML file (`--config`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

mod choices;
pub mod file;

pub use choices::{CpuAffinity, LogFormat};

/// Flags of `uring-comet serve`. Each doc line is its `--help`.
#[allow(rustdoc::invalid_html_tags)] // clap prints these docs as --help: `<id>` is a placeholder
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Subscriber listener address (GET /test/<ids>, /sub/<ids>: chunked, SSE, WebSocket;
    /// GET /poll/<ids>).
    /// Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Publish listener address (POST /send/<id>, GET /stats, /metrics, /healthz, /readyz,
    /// GET /presence/<id>, POST /presence, GET /events/presence, DELETE /subscribers/<id>;
    /// with --friends also POST /publish/<user>, PUT|DELETE /friends/<a>/<b>). Port 0 picks
    /// a free port.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub publish_listen: SocketAddr,
    /// Number of shards (threads, each with its own ring and listeners); default: available cores.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Most subscriber and publisher connections held at once, all shards together (any
    /// one shard may hold more than an equal share); a connection over it is answered 503.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_conns: usize,
    /// Most bytes of output queued for one subscriber before it is disconnected as too slow.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_pending_bytes: usize,
    /// Kernel send buffer of each subscriber socket, bytes (SO_SNDBUF, set on the listener
    /// and inherited, like nginx's `listen ... sndbuf=`); 0 leaves the kernel's autotuning
    /// (up to net.ipv4.tcp_wmem's maximum, 4 MiB by default). A subscriber that stops
    /// reading holds up to this much kernel memory (the kernel doubles the value for its
    /// bookkeeping) before its output queues in the server and `--max-pending-bytes` cuts it.
    #[arg(long, default_value_t = 0)]
    pub sndbuf: usize,
    /// Messages of at least this many bytes (as framed) go to subscribers with zero-copy
    /// sends of the one shared frame (io_uring `SEND_ZC`, Linux 6.0; the buffer is held
    /// until the kernel's notification); 0 turns them off. The epoll backend always copies.
    #[arg(long, default_value_t = DEFAULT_ZEROCOPY_MIN_BYTES)]
    pub zerocopy_min_bytes: usize,
    /// Where a subscriber under one id lives: `owner` hands it to the shard that owns the id;
    /// `accept` keeps it on the shard that accepted it (see DESIGN.md for both measured).
    #[arg(long, value_enum, default_value_t = Placement::Owner)]
    pub placement: Placement,
    /// Seconds between heartbeats on a quiet stream (SSE comment, WebSocket ping, a `\n`
    /// chunk on `/test/`); 0 turns them off. A heartbeat that cannot be delivered within
    /// `--send-timeout` closes the connection: that is how vanished peers are found.
    #[arg(long, default_value_t = 30)]
    pub heartbeat: u64,
    /// Send deadline, seconds: data sent to a connection that stays unacknowledged this long
    /// (a vanished peer, or a reader that stopped with its receive window at zero) makes the
    /// kernel abort it (TCP_USER_TIMEOUT, tcp(7); zero-window probes count since Linux 5.1).
    /// Counted in `/stats` `send_timeouts`.
    #[arg(long, default_value_t = 20)]
    pub send_timeout: u64,
    /// Seconds a client has to send its complete request head (and a publish its body)
    /// before it gets 408 and is closed; slow-loris clients cannot pile up.
    #[arg(long, default_value_t = 10)]
    pub head_timeout: u64,
    /// Bearer token publishers must send (`Authorization: Bearer TOKEN`) on every request
    /// of the publish listener but the demo page and the probes `/healthz` and `/readyz`
    /// (`/send`, `/stats`, `/metrics`, `/publish`, `/friends`);
    /// required when the publish listener is not on loopback. Also read from
    /// the environment variable `UC_PUBLISH_TOKEN`.
    #[arg(long, env = "UC_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,
    /// Value of `Access-Control-Allow-Origin` on streams and preflights; `*` (default) lets
    /// pages of any origin subscribe; an empty string sends no CORS headers.
    #[arg(long, default_value = "*")]
    pub cors_origin: String,
    /// Data-plane backend: `uring` (io_uring), `epoll` (the readiness baseline), or `auto`
    /// (io_uring if the kernel allows it, else epoll with one log line naming the cause).
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,
    // --- cluster mode (crate::cluster) ---
    /// Cluster mode: share one id space with the other nodes on this Redis,
    /// `redis://[:PASSWORD@]HOST:PORT[/DB]`, or Redis Cluster, `redis-cluster://[:PASSWORD@]
    /// HOST:PORT[,HOST:PORT...]`. A send accepted here reaches every matching connection on
    /// every node; its reply counts this node's deliveries. Also read from `UC_CLUSTER`.
    #[arg(long, env = "UC_CLUSTER", hide_env_values = true)]
    pub cluster: Option<String>,
    /// Bucket channels ids are hashed into (`uc:<B>:<b>`); must be the same on every node.
    /// More buckets: fewer messages a node receives for ids it does not hold, more
    /// subscriptions.
    #[arg(long, default_value_t = crate::cluster::DEFAULT_BUCKETS)]
    pub cluster_buckets: u32,
    /// `--cluster-mode` and the affine mode's flags.
    #[command(flatten)]
    pub cluster_affine: crate::cluster::affine::AffineArgs,
    /// Friends graph: a SNAP edge list (`u<TAB>v` or `u v` per line, `#` comments) loaded at
    /// start; enables `POST /publish/<user>` and `PUT|DELETE /friends/<a>/<b>`. Edits go to
    /// FILE.journal. A file that does not exist yet is an empty graph; its directory must
    /// exist (else the start fails, naming it). The server locks FILE.lock while it runs:
    /// a second server on the same FILE fails to start (each needs its own copy).
    #[arg(long, value_name = "FILE")]
    pub friends: Option<PathBuf>,
    /// A line `u v` of the friends file means u follows v (u receives v's events), not a
    /// friendship both ways.
    #[arg(long, requires = "friends")]
    pub directed: bool,
    /// Stop at the first bad line of the friends file instead of reporting and skipping it.
    #[arg(long, requires = "friends")]
    pub strict: bool,
    /// Shard threads' CPU affinity: `auto` pins shard i to the i-th CPU this process may run
    /// on (sched_getaffinity(2), wrapping when there are more shards than CPUs), as nginx's
    /// `worker_cpu_affinity auto`; `off` (default) leaves placement to the scheduler. On the
    /// 2-vCPU test box, with the load tester beside the server, pinning made no difference
    /// beyond run-to-run noise (DESIGN.md section 8).
    #[arg(long, value_enum, default_value_t = CpuAffinity::Off)]
    pub cpu_affinity: CpuAffinity,
    // --- history (crate::history) ---
    /// Messages kept per id for subscribers that reconnect with a cursor (`Last-Event-ID`,
    /// `last_event_id=`); 0 turns history off (no cursors, today's bytes on every stream).
    #[arg(long, default_value_t = 32)]
    pub history: usize,
    /// No message older than this is kept (`500ms`, `30s`, `10m`, `1h`).
    #[arg(long, default_value = "10m", value_parser = crate::duration::parse_duration)]
    pub history_ttl: std::time::Duration,
    /// Most bytes of history per process, all ids together (each shard an equal share;
    /// `256MiB`, `1GiB`, `100000`); past it the oldest messages of any id go first, counted in
    /// `/stats` `history_evicted`.
    #[arg(long, default_value = "256MiB", value_parser = choices::parse_bytes)]
    pub history_memory: u64,
    /// How long `GET /poll/<ids>` holds a request that has no message to answer with.
    #[arg(long, default_value = "30s", value_parser = crate::duration::parse_duration)]
    pub poll_timeout: std::time::Duration,
    // --- drain and restarts (server::serve) ---
    /// On SIGTERM, end the streams over this long (`10s`, `500ms`; `0` at once), spread
    /// evenly, each with its transport's proper end, then exit 0; the listeners close at
    /// once. A second SIGTERM, or SIGINT, ends every stream at once.
    #[arg(long, default_value = "10s", value_parser = crate::duration::parse_duration)]
    pub drain_period: std::time::Duration,
    /// Start beside a running instance on the same ports (joining its SO_REUSEPORT group)
    /// for a hand-over: without it `serve` refuses ports that already have a listener. Then
    /// send SIGTERM to the old instance once this one is ready (README: Restarts).
    #[arg(long)]
    pub takeover: bool,
    // --- operations (crate::metrics, crate::logging, config::file) ---
    /// Also serve `GET /metrics` (Prometheus), `/healthz` and `/readyz` on this address,
    /// without the bearer token (bind it where only the monitoring system reaches); they
    /// are always on the publish listener too (`/metrics` there behind --publish-token).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Log lines on stderr: `text` (human-readable) or `json` (one JSON object a line:
    /// timestamp, level, target, fields). The level is `RUST_LOG`'s (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Read settings from this TOML file first: each key is a flag's long name
    /// (`max-conns = 100000`); flags and `UC_*` environment variables given as well win; a
    /// key the server does not know stops the start. Example:
    /// kernel-tuning/uring-comet.toml. Also read from `UC_CONFIG`.
    #[arg(long, value_name = "FILE", env = "UC_CONFIG", hide_env_values = true)]
    pub config: Option<PathBuf>,
    /// Subscriber tokens (crate::auth): `--sub-jwt-*`, `--sub-jwks-file`, `--sub-token-cookie`.
    #[command(flatten)]
    pub sub_auth: crate::auth::SubAuthArgs,
    /// Presence (crate::presence): `--presence-*`, `--friends-presence`.
    #[command(flatten)]
    pub presence: crate::presence::PresenceArgs,
    /// Admin (crate::admin): `--max-conns-per-ip`.
    #[command(flatten)]
    pub admin: crate::admin::AdminArgs,
    /// Idle SSE/raw subscribers hold no hang-up poll (-256 B kernel each): hang-ups seen at the next write.
    #[arg(long)]
    pub no_idle_poll: bool,
}

/// Which data-plane backend the shards run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// io_uring if available, else epoll.
    Auto,
    /// io_uring; fail at start if it is not available.
    Uring,
    /// epoll (readiness), each shard on a tokio current-thread runtime.
    Epoll,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::Uring => "uring",
            Backend::Epoll => "epoll",
        })
    }
}

/// Which shard holds a subscriber connection under a single id.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The shard that owns the id (by id hash): no directory entry, no cross-core hop.
    Owner,
    /// The shard whose listener accepted it (SO_REUSEPORT's choice), as for several ids.
    Accept,
}

/// Validated server settings; build one with [`ServeArgs::into_config`] or [`ServerConfig::local`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Subscriber listener address.
    pub listen: SocketAddr,
    /// Publish listener address.
    pub publish_listen: SocketAddr,
    /// Shard count, 1 to [`MAX_SHARDS`].
    pub shards: usize,
    /// Most connections held at once, all shards together.
    pub max_conns: usize,
    /// Output bound per subscriber, bytes.
    pub max_pending_bytes: usize,
    /// SO_SNDBUF of subscriber sockets, bytes (0: the kernel's autotuning).
    pub sndbuf: usize,
    /// Placement of single-id subscribers.
    pub placement: Placement,
    /// Data-plane backend.
    pub backend: Backend,
    /// Heartbeat interval on quiet streams, seconds (0: none).
    pub heartbeat_s: u64,
    /// TCP_USER_TIMEOUT of every accepted socket, seconds (at least 1).
    pub send_timeout_s: u64,
    /// `Access-Control-Allow-Origin` value ("" for none).
    pub cors_origin: String,
    /// Time allowed for a request head (and publish body), seconds.
    pub head_timeout_s: u64,
    /// Bearer token for the publish API, if any.
    pub publish_token: Option<String>,
    /// Cluster mode, if on.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// The friends graph's edge file (`--friends`), if any.
    pub friends: Option<PathBuf>,
    /// `--directed`: a line `u v` means u follows v.
    pub friends_directed: bool,
    /// `--strict`: a bad line stops the load.
    pub friends_strict: bool,
    /// Shard thread pinning.
    pub cpu_affinity: CpuAffinity,
    /// History settings, `memory` for the whole process (see [`ServerConfig::shard_history`]).
    pub history: crate::history::HistoryConfig,
    /// `--poll-timeout`, ms.
    pub poll_timeout_ms: u64,
    /// `--drain-period`, ms: SIGTERM's drain ends the streams over this long (0: at once).
    pub drain_period_ms: u64,
    /// `--takeover`: skip the check that the ports are free (a hand-over).
    pub takeover: bool,
    /// `--metrics-listen`: a listener of its own for `/metrics`, `/healthz`, `/readyz`.
    pub metrics_listen: Option<SocketAddr>,
    /// Subscriber tokens (`--sub-jwt-secret-file`, `--sub-jwks-file`), if required.
    pub sub_auth: Option<std::sync::Arc<crate::auth::Verifier>>,
    /// `--zerocopy-min-bytes`: shared frames this long or longer go out zero-copy (0: never).
    pub zerocopy_min_bytes: usize,
    /// Presence events and friends presence (`--presence-*`).
    pub presence: crate::presence::PresenceConfig,
    /// Admin settings: `--max-conns-per-ip`.
    pub admin: crate::admin::AdminArgs,
    /// Idle SSE and long-poll subscribers hold a hang-up poll (not `--no-idle-poll`).
    pub idle_poll: bool,
}

/// `--zerocopy-min-bytes`' default (see DESIGN.md, "Shared frames and zero-copy sends").
pub const DEFAULT_ZEROCOPY_MIN_BYTES: usize = 0;

/// Most shards one process runs: a shard set is a 64-bit mask in the router's directory.
pub const MAX_SHARDS: usize = 64;

impl ServeArgs {
    /// Checks the flags and fills in defaults.
    ///
    /// Errors: a shard count of 0 or over [`MAX_SHARDS`]; equal listener addresses; a
    /// `--cluster` that is neither a `redis://` URL nor a `redis-cluster://` list; a
    /// subscriber-token key file that cannot be read or holds no usable key ([`crate::auth::SubAuthArgs::verifier`]).
    pub fn into_config(self) -> anyhow::Result<ServerConfig> {
        let shards = self
            .shards
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if shards == 0 || shards > MAX_SHARDS {
            anyhow::bail!("--shards must be 1 to {MAX_SHARDS}, got {shards}");
        }
        if !self.publish_listen.ip().is_loopback()
            && self.publish_token.as_deref().unwrap_or("").is_empty()
        {
            anyhow::bail!(
                "--publish-listen {} is not a loopback address: anyone who reaches it could publish; set --publish-token (or UC_PUBLISH_TOKEN) and send `Authorization: Bearer <token>`",
                self.publish_listen
            );
        }
        if self
            .publish_token
            .as_deref()
            .is_some_and(|t| t.bytes().any(|b| !b.is_ascii_graphic()))
        {
            anyhow::bail!("--publish-token must be printable ASCII without spaces");
        }
        if self.cors_origin.bytes().any(|b| b.is_ascii_control()) {
            anyhow::bail!("--cors-origin must not hold control characters");
        }
        if self.listen == self.publish_listen && self.listen.port() != 0 {
            anyhow::bail!("--listen and --publish-listen must differ: publishing is never possible on the subscriber listener");
        }
        let affine = self.cluster_affine.resolve(self.cluster.as_deref())?;
        Ok(ServerConfig {
            listen: self.listen,
            publish_listen: self.publish_listen,
            shards,
            max_conns: self.max_conns.max(1),
            max_pending_bytes: self.max_pending_bytes.max(1024),
            sndbuf: self.sndbuf,
            placement: self.placement,
            backend: self.backend,
            heartbeat_s: self.heartbeat,
            send_timeout_s: self.send_timeout.max(1),
            cors_origin: self.cors_origin,
            head_timeout_s: self.head_timeout.max(1),
            publish_token: self.publish_token.filter(|t| !t.is_empty()),
            cluster: match self.cluster.filter(|u| !u.is_empty()) {
                Some(url) => Some(
                    crate::cluster::ClusterConfig::new(&url, self.cluster_buckets)?
                        .with_history(self.history, self.history_ttl.as_millis() as u64)
                        .with_affine(affine),
                ),
                None => None,
            },
            friends: self.friends,
            friends_directed: self.directed,
            friends_strict: self.strict,
            cpu_affinity: self.cpu_affinity,
            history: crate::history::HistoryConfig {
                max_msgs: self.history,
                ttl_ms: self.history_ttl.as_millis() as u64,
                memory: usize::try_from(self.history_memory).unwrap_or(usize::MAX),
            },
            poll_timeout_ms: self.poll_timeout.as_millis() as u64,
            drain_period_ms: self.drain_period.as_millis() as u64,
            takeover: self.takeover,
            metrics_listen: self.metrics_listen,
            sub_auth: self.sub_auth.verifier()?,
            zerocopy_min_bytes: self.zerocopy_min_bytes,
            presence: (&self.presence).into(),
            admin: self.admin,
            idle_poll: !self.no_idle_poll,
        })
    }
}

impl ServerConfig {
    /// Settings for tests and the load tester: both listeners on 127.0.0.1 port 0.
    pub fn local(shards: usize) -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            publish_listen: "127.0.0.1:0".parse().unwrap(),
            shards,
            max_conns: 100_000,
            max_pending_bytes: 64 * 1024,
            sndbuf: 0,
            placement: Placement::Owner,
            backend: Backend::Auto,
            heartbeat_s: 30,
            send_timeout_s: 20,
            cors_origin: "*".to_string(),
            head_timeout_s: 10,
            publish_token: None,
            cluster: None,
            friends: None,
            friends_directed: false,
            friends_strict: false,
            cpu_affinity: CpuAffinity::Off,
            history: crate::history::HistoryConfig {
                max_msgs: 32,
                ttl_ms: 600_000,
                memory: 256 << 20,
            },
            poll_timeout_ms: 30_000,
            drain_period_ms: 10_000,
            takeover: false,
            metrics_listen: None,
            sub_auth: None,
            zerocopy_min_bytes: DEFAULT_ZEROCOPY_MIN_BYTES,
            presence: Default::default(),
            admin: crate::admin::AdminArgs::default(),
            idle_poll: true,
        }
    }

    /// One shard's history settings: `--history-memory` split evenly between the shards.
    pub fn shard_history(&self) -> crate::history::HistoryConfig {
        crate::history::HistoryConfig {
            memory: self.history.memory / self.shards.max(1),
            ..self.history
        }
    }
}
