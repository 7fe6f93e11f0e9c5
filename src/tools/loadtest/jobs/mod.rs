//! The load tester's jobs: each `run()` is a list of phases, like its module doc's numbered
//! list.
//!
//! - [`ck10`]: the main job (`uring-comet loadtest`), the seed's CK10 test.
//! - [`history`]: `loadtest history`, the server's bytes per held message of history.
//! - [`soak`]: `loadtest soak`, the main job held long with the memory log on, and its chart.
//! - [`cluster`]: `loadtest --nodes N`, the main job on a local cluster.
//! - [`compare`]: `loadtest compare`, one scenario on each backend, an external server and the
//!   host's delivery ceiling.
//! - [`million`]: `loadtest million`, a million subscribers from worker processes.
//! - [`friends`]: `loadtest friends`, the friends fan-out.
//! - [`room`]: `loadtest room`, many subscribers under few ids (rooms), and the ceiling.
//! - [`halves`]: `loadtest flood` and `loadtest msggen` on their own.

pub(crate) mod ck10;
pub(crate) mod cluster;
pub(crate) mod compare;
pub(crate) mod friends;
pub(crate) mod halves;
pub(crate) mod history;
pub(crate) mod million;
pub(crate) mod room;
pub(crate) mod soak;
