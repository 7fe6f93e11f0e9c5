//! The server in this process (`uring_comet::server::start`) on 127.0.0.1 port 0, on the
//! backend the running test body was given by [`both_backends!`](crate::both_backends).

use std::cell::Cell;

use uring_comet::config::{Backend, ServerConfig};
use uring_comet::server::ServerHandle;

thread_local! {
    /// The backend the current test body runs on (set by [`with_backend`]).
    static BACKEND: Cell<Backend> = const { Cell::new(Backend::Uring) };
}

/// Runs `body` with servers started on `backend` (this thread only).
pub(crate) fn with_backend(backend: Backend, body: fn()) {
    BACKEND.with(|b| b.set(backend));
    body();
}

/// The backend of the running test body (io_uring outside [`with_backend`]).
pub(crate) fn backend() -> Backend {
    BACKEND.with(|b| b.get())
}

/// Starts an in-process server with `shards` shards on 127.0.0.1 port 0, history off
/// (`--history 0`: streams carry no cursors, as the suites written before history expect;
/// the history suites, tests/history*.rs, start theirs with [`start_with`]).
pub(crate) fn start(shards: usize) -> ServerHandle {
    start_with(local(shards))
}

/// [`ServerConfig::local`] with history off (`--history 0`), the settings the suites
/// written before history start from.
pub(crate) fn local(shards: usize) -> ServerConfig {
    let mut cfg = ServerConfig::local(shards);
    cfg.history.max_msgs = 0;
    cfg
}

/// Starts an in-process server with the given settings, on the test body's backend, and
/// checks it runs that backend on two distinct bound loopback listeners.
pub(crate) fn start_with(mut cfg: ServerConfig) -> ServerHandle {
    cfg.backend = backend();
    let server = uring_comet::server::start(cfg).expect("server::start failed");
    assert_eq!(
        server.backend(),
        backend(),
        "the server runs another backend than asked"
    );
    let s = server.subscriber_addr();
    let p = server.publish_addr();
    assert!(
        s.ip().is_loopback() && s.port() != 0,
        "subscriber_addr {s} is not a bound loopback address"
    );
    assert!(
        p.ip().is_loopback() && p.port() != 0,
        "publish_addr {p} is not a bound loopback address"
    );
    assert_ne!(
        s, p,
        "the subscriber and publish listeners must be separate"
    );
    server
}

/// Starts an in-process server that must refuse to start, on the test body's backend, and
/// returns the error (`{:#}` shows its causes); panics with `what` if it starts.
pub(crate) fn start_error(mut cfg: ServerConfig, what: &str) -> impl std::fmt::Display {
    cfg.backend = backend();
    match uring_comet::server::start(cfg) {
        Ok(_) => panic!("{what}: the server started"),
        Err(e) => e,
    }
}
