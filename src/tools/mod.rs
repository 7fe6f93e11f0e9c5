//! The tools beside the server: every subcommand but `serve`. They import the server core
//! (to start it, to parse what it sends); the core never imports them
//! (`scripts/check-layering.sh` checks this in CI).
//!
//! - [`loadtest`]: `uring-comet loadtest`, the built-in load tester (main job, compare, soak,
//!   million, friends, cluster).
//! - [`check`]: `uring-comet check-system`, whether this box's limits allow N connections.
//! - [`plot`]: `uring-comet plot`, a memory log as a chart.
//! - `duration`: the core's [`crate::duration`] (the one parser of time flags, `serve`'s
//!   too), under the path the subcommands name it by.
//! - [`gen_friends`]: `uring-comet gen-friends`, a seeded Chung-Lu social graph.

pub mod check;
pub(crate) use crate::duration;
pub mod gen_friends;
pub mod loadtest;
pub mod plot;
