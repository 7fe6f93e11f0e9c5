//! The tools beside the server: every subcommand but `serve`. They import the server core
//! (to start it, to parse what it sends); the core never imports them
//! (`scripts/check-layering.sh` checks this in CI).
//!
//! - [`loadtest`]: `uring-comet loadtest`, the built-in load tester (main job, compare, soak,
//!   million, friends, cluster).
//! - [`check`]: `uring-comet check-system`, whether this box's limits allow N connections.
//! - [`plot`]: `uring-comet plot`, a memory log as a chart.
//! - [`duration`]: the one parser of time flags (`30`, `250ms`, `10m`, `1h30m`), every
//!   subcommand's.
//! - [`gen_friends`]: `uring-comet gen-friends`, a seeded Chung-Lu social graph.

pub mod check;
pub mod duration;
pub mod gen_friends;
pub mod loadtest;
pub mod plot;
