//! Unit tests of the shard on the fake driver ([`crate::driver::fake`]): no socket and no
//! kernel I/O, only the shard's public API; each test names the rule it checks and fails if
//! that rule breaks.
//! - `harness`: the bench: shards on fake drivers sharing a mesh, driven turn by turn.
//! - `delivery`: request head -> login -> response head -> delivery, in exact bytes.
//! - `replies`: pipelined publish replies go out in request order.
//! - `backpressure`: a subscriber's backlog counts only behind a stuck send, or past 64x.
//! - `head_timeout`: the sweep's 408 goes only to a connection still reading a request.
//! - `slots`: a direct descriptor's slot is freed only by its CLOSE completion.
//! - `linger`: a half-closed publisher's reply; the bounded discard after an error reply.
//! - `resume`: a replay from another shard and the live stream neither overlap nor gap.
//! - `drain`: SIGTERM's drain closes publishers at once and ends streams only at its pace.
//! - `idle`: the tables go back to the kernel soon after the last close.
//! - `head_burst`: a burst of heads past the head-buffer pool waits for buffers, no retry storm.

mod backpressure;
mod delivery;
mod drain;
mod harness;
mod head_burst;
mod head_timeout;
mod idle;
mod linger;
mod replies;
mod resume;
mod slots;
