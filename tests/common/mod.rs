//! Helpers shared by the integration tests. Each test binary compiles this module on its
//! own (`mod common;`) and uses only part of it, hence the `dead_code` allowance below; the
//! test files import it whole (`use common::*`).
//!
//! - `server`: the in-process server (`uring_comet::server::start`, the only caller) on the
//!   test's backend;
//! - `child`: the ONE launcher of `uring-comet` as a child process (`serve`, and the binary
//!   for the tool subcommands);
//! - `redis`: the ONE launcher of a throwaway redis-server; `redis_cluster`: of a throwaway
//!   Redis Cluster (3 masters, 3 replicas);
//! - `http`: a parsed response head and its checks;
//! - `client`: a blocking HTTP/1.1 client over `TcpStream` whose every read has a timeout;
//! - `comet`: the seed protocol: message bytes, subscriber and publisher wrappers, `/stats`;
//! - `friends`: the friends fan-out: graph files, `/publish` and `/friends` requests, events;
//! - `history`: resuming (issue 14): cursors, their headers, each transport's cursor-mode
//!   bytes; `poll`: long-polling; `track`: a connection's cursor followed message by message;
//! - `presence`: presence feeds, opened and read with their exact bytes;
//! - `proxy`: a TCP proxy in the test process whose connections a test can cut;
//! - `negotiated`: `/sub/` streams: SSE, WebSocket frames, raw, and a real SSE parser;
//! - `streams`: one open stream of any kind, read with its exact framing;
//! - `kernel`: what `/proc` says about sockets and fds, RST closes, RLIMIT_NOFILE;
//! - `metrics`: `/metrics` parsed strictly and checked by promtool, the probes;
//!   `prometheus`: a real Prometheus server scraping the test's server.
//!
//! Every test body that talks to a server runs on both backends through [`both_backends!`].
// Each test binary uses a different part of these helpers (some none of a whole module, hence
// the re-exports too); what one binary leaves unused another uses.
#![allow(dead_code, unused_imports)]

pub(crate) mod child;
pub(crate) mod client;
pub(crate) mod comet;
pub(crate) mod friends;
pub(crate) mod history;
pub(crate) mod http;
pub(crate) mod kernel;
pub(crate) mod metrics;
pub(crate) mod negotiated;
pub(crate) mod poll;
pub(crate) mod presence;
pub(crate) mod prometheus;
pub(crate) mod proxy;
pub(crate) mod redis;
pub(crate) mod redis_cluster;
pub(crate) mod server;
pub(crate) mod streams;
pub(crate) mod track;

pub(crate) use child::*;
pub(crate) use client::*;
pub(crate) use comet::*;
pub(crate) use friends::*;
pub(crate) use history::*;
pub(crate) use http::*;
pub(crate) use kernel::*;
pub(crate) use metrics::*;
pub(crate) use negotiated::*;
pub(crate) use poll::*;
pub(crate) use presence::*;
pub(crate) use prometheus::*;
pub(crate) use proxy::*;
pub(crate) use redis::*;
pub(crate) use redis_cluster::*;
pub(crate) use server::*;
pub(crate) use streams::*;
pub(crate) use track::*;

use std::time::{Duration, Instant};

/// Declares test functions whose one body runs twice: as `<name>::uring` on the io_uring
/// backend and as `<name>::epoll` on the epoll baseline. The body stays a plain function of
/// the test file (so it sees the file's imports); the module only holds the two tests.
#[macro_export]
macro_rules! both_backends {
    ($($(#[$meta:meta])* fn $name:ident() $body:block)*) => {$(
        $(#[$meta])*
        fn $name() $body
        mod $name {
            #[test]
            fn uring() {
                $crate::common::with_backend(uring_comet::config::Backend::Uring, super::$name)
            }
            #[test]
            fn epoll() {
                $crate::common::with_backend(uring_comet::config::Backend::Epoll, super::$name)
            }
        }
    )*};
}

/// Polls `cond` every 10 ms until it holds or `limit` passes; returns whether it held.
pub(crate) fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
