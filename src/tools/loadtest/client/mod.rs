//! The load tester's clients: the one subscriber loop and its three roles, the one publish
//! connection and its two publishers, and the blocking side clients of the main job.
//!
//! - [`connect`]: non-blocking connects from spread source addresses, the connect check,
//!   partial request writes, connect pacing.
//! - [`subscriber`]: the one subscriber event loop; a [`subscriber::Role`] says what a
//!   message, a head and an end mean.
//! - [`flood`]: the main job's subscribers (every chunk checked, `Stats:` lines, churn).
//! - [`million_worker`]: one worker process of `loadtest million` (one message per stream).
//! - [`friends_subs`]: the logins of `loadtest friends` (friends events checked).
//! - [`room`]: the subscribers of `loadtest room` (many per id, checked per connection).
//! - [`uring_recv`]: the io_uring receive path of `--client-io uring` (multishot receives).
//! - [`publish`]: the keep-alive publish connection.
//! - [`msggen`]: publishers on a schedule, one request in flight each.
//! - [`pipeline`]: pipelined publishers (`loadtest compare`, `million`).
//! - [`slow`]: slow readers and the publisher that sends to them (`--slow-readers`).
//! - [`churn`]: which losses churn excuses, and the server's baseline after everyone left.

pub(crate) mod churn;
pub(crate) mod connect;
pub(crate) mod flood;
pub(crate) mod friends_subs;
pub(crate) mod million_worker;
pub(crate) mod msggen;
pub(crate) mod pipeline;
pub(crate) mod publish;
pub(crate) mod room;
pub(crate) mod slow;
pub(crate) mod subscriber;
pub(crate) mod uring_recv;
