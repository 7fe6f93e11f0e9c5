//! uring-comet: a comet server for Linux on io_uring. Subscribers hold long-lived HTTP
//! streams and are logged in under ids; publishers `send(id, msg)` over a separate listener.
//!
//! # Layout
//! - [`config`]: `serve` flags and validated settings.
//! - [`cluster`]: cluster mode: nodes sharing one id space through Redis pub/sub.
//! - [`id`]: subscriber ids (opaque 1-128 byte strings; decimal integers stored inline).
//! - [`http`]: sans-IO request-head parsing and response/chunk formatting (RFC 9112).
//! - [`router`]: one router shard: id -> local connections, and the directory of which shards
//!   hold the ids this shard owns (sans-IO).
//! - [`friends`]: the friends store (per-shard CSR follower lists, edits journal).
//! - [`mesh`]: the cross-core protocol: lock-free queues between shards, batches, doorbells.
//! - [`driver`]: the data plane's I/O interface and its io_uring implementation.
//! - [`conn`]: the connection record and its slab.
//! - [`shard`]: one shard's event loop: completions in, router and mesh, sends out.
//! - [`server`]: listeners, shard threads, start and shutdown.
//! - [`stats`]: per-shard counters read by `GET /stats`.
//! - [`tools`]: the subcommands beside the server (`loadtest`, `check-system`, `plot`,
//!   `gen-friends`); the core above never imports them.

pub mod cluster;
pub mod config;
pub mod conn;
pub mod driver;
pub mod friends;
pub mod http;
pub mod id;
pub mod mesh;
pub mod router;
pub mod server;
pub mod shard;
pub mod stats;
#[cfg(feature = "loadtest")]
pub mod tools;
