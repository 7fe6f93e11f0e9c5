//! The host the load tester runs on: what /proc says, the server child, redis-server.
//!
//! - [`proc`]: /proc readings (RSS, CPU time, listening and established sockets), the clock,
//!   the fd limit.
//! - [`child`]: the server under test as a child process ([`child::ServerGuard`]).
//! - [`procmem`]: memory and CPU of a set of processes, and the kernel's memory (`compare`).
//! - [`hold_peer`]: the accept-and-hold peer (`loadtest hold-peer`) of `million --hold-peer`.
//! - [`memlog`]: the memory log (`--mem-log`), written by a background thread.
//! - [`redis_server`]: a redis-server child for `loadtest --nodes`.
//! - [`slabinfo`]: /proc/slabinfo, per cache, and the change between two readings.

pub(crate) mod child;
pub(crate) mod hold_peer;
pub(crate) mod memlog;
pub(crate) mod proc;
pub(crate) mod procmem;
pub(crate) mod redis_cluster;
pub(crate) mod redis_server;
pub(crate) mod slabinfo;
