//! Starting and stopping the server: listeners, shard threads, signals.
//!
//! [`start`] binds every shard's SO_REUSEPORT listeners in the calling thread (so bind errors
//! and the ports chosen for port 0 are known before it returns), then starts one OS thread
//! per shard. Each thread creates its own driver (an io_uring ring, or an epoll instance)
//! and runs a runtime (tokio-uring, or tokio's current-thread one) whose only task is the
//! shard loop: turn the shard while it has work; otherwise announce sleep and wait for the
//! driver's fd (registered with the runtime's reactor through `AsyncFd`), the shard's
//! doorbell, or a timer, whichever comes first.
//!
//! # Files, in the order `start` uses them
//! - `startup`: [`start`] as a list of phases, and the [`ServerHandle`] it returns.
//! - `listen`: the SO_REUSEPORT listeners, one per shard and listener kind; the check that
//!   a port has no listener yet (`--takeover` skips it).
//! - `holder`: which process listens on a port (`/proc`), for that check's error.
//! - `friends`: loading the friends store (`--friends`) before the shards start.
//! - `thread`: the shard threads: one body for both backends, generic over the driver, and
//!   the shard loop.
//! - `affinity`: pinning shard threads to CPUs (`--cpu-affinity`).
//! - `serve`: `uring-comet serve` ([`serve_forever`]): signals (SIGTERM's drain), the
//!   `LISTEN` line, exit codes.

mod affinity;
mod friends;
mod holder;
mod listen;
mod serve;
mod startup;
mod thread;

pub use serve::serve_forever;
pub use startup::{start, ServerHandle};
