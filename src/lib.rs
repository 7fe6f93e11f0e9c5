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
//! - [`friends`]: the friends store (per-shard CSR follower lists, edits journal, `gen-friends`).
//! - [`mesh`]: the cross-core protocol: lock-free queues between shards, batches, doorbells.
//! - [`driver`]: the data plane's I/O interface and its io_uring implementation.
//! - [`conn`]: the connection record and its slab.
//! - [`shard`]: one shard's event loop: completions in, router and mesh, sends out.
//! - [`server`]: listeners, shard threads, start and shutdown.
//! - [`stats`]: per-shard counters read by `GET /stats`.
//! - [`loadtest`]: the built-in load tester (floodtest and msggen, compare, soak).
//! - [`plot`]: the memory log as a chart (SVG or PNG) and its growth after warm-up.
//! - [`check`]: `check-system`: whether this box's limits allow N connections, and the fixes.

pub mod check;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod driver;
pub mod friends;
pub mod http;
pub mod id;
pub mod loadtest;
pub mod mesh;
pub mod plot;
pub mod router;
pub mod server;
pub mod shard;
pub mod stats;
