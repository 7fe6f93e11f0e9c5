//! uring-comet: a comet server for Linux on io_uring. Subscribers hold long-lived HTTP
//! streams and are logged in under ids; publishers `send(id, msg)` over a separate listener.
//!
//! # Layout
//! In the order a request travels, then the settings and the tools:
//! - [`server`]: listeners, shard threads (one body for both backends), start, serve and
//!   shutdown.
//! - [`driver`]: the data plane's I/O interface, its io_uring and epoll backends, and the
//!   backend probe (`--backend auto` falls back to epoll).
//! - [`shard`]: one shard's event loop: completions in, router and mesh, sends out.
//! - [`conn`]: the connection record and its slab.
//! - [`http`]: sans-IO request-head parsing (per listener), response heads and replies,
//!   stream framing (chunked, SSE, WebSocket) (RFC 9112, RFC 6455).
//! - [`history`]: per-id history and cursors: numbering, epochs, bounds, resume verdicts.
//! - [`id`]: subscriber ids (opaque 1-128 byte strings; decimal integers stored inline).
//! - [`router`]: one router shard: id -> local connections, and the directory of which shards
//!   hold the ids this shard owns (sans-IO).
//! - [`mesh`]: the cross-core protocol: lock-free queues between shards, batches, doorbells.
//! - [`friends`]: the friends store (per-shard CSR follower lists, the edits journal, the
//!   lock on its file).
//! - [`cluster`]: cluster mode: nodes sharing one id space through Redis pub/sub.
//! - [`stats`]: per-shard counters read by `GET /stats`; [`metrics`]: `GET /metrics`
//!   (Prometheus), `/healthz`, `/readyz`, and the `--metrics-listen` listener.
//! - [`auth`]: subscriber tokens (JWT): keys, verification, what a token covers.
//! - [`admin`]: the admin flags and `--max-conns-per-ip`'s per-address table (the kick,
//!   `DELETE /subscribers/<id>`, is a publish request every shard carries out).
//! - [`config`]: `serve` flags (also from a TOML file, `--config`) and validated settings;
//!   [`logging`]: text or JSON log lines; [`duration`]: the one parser of time
//!   flags (`30`, `250ms`, `10m`, `1h30m`), `serve`'s and every tool's.
//! - [`tools`]: the subcommands beside the server (`loadtest`, `check-system`, `plot`,
//!   `gen-friends`); the core above never imports them.

pub mod admin;
pub mod alloc;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod driver;
pub mod duration;
pub mod friends;
pub mod history;
pub mod http;
pub mod id;
pub mod logging;
pub mod mesh;
pub mod metrics;
pub mod presence;
pub mod router;
pub mod server;
pub mod shard;
pub mod stats;
#[cfg(feature = "loadtest")]
pub mod tools;
