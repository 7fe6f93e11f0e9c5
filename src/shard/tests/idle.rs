//! Idle memory: once the last connection of a shard has closed, the loop's idle tick
//! shortens so the tables go back to the kernel soon after (not only after a whole second
//! that no other shard's message or timer happens to interrupt), then returns to its slow
//! pace until a connection comes again.

use std::time::Duration;

use super::harness::*;
use crate::driver::fake::Kind;

#[test]
fn the_idle_tick_shortens_once_the_last_connection_closed() {
    let mut h = Harness::new(config(1, |_| {}));
    let slow = h.shards[0].idle_timeout();
    assert_eq!(
        slow,
        Duration::from_secs(1),
        "no connection yet: the slow pace"
    );
    let (_, a) = h.subscribe(0, 10_001, "/sub/7");
    h.read(0, a);
    assert_eq!(h.shards[0].idle_timeout(), slow, "a connection is held");
    h.io[0].complete(a, Kind::Poll, i32::from(libc::POLLRDHUP));
    h.turn(0);
    h.io[0].finish_close(a);
    h.drive();
    let quick = h.shards[0].idle_timeout();
    assert!(
        quick < slow,
        "the last connection closed: release soon ({quick:?})"
    );
    h.shards[0].on_idle();
    assert_eq!(
        h.shards[0].idle_timeout(),
        slow,
        "released: back to the slow pace"
    );
}
