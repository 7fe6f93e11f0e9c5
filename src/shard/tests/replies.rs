//! Pipelined publish replies go out in request order, even when the holder replies of an
//! earlier publish overtake its owner's reply (the owner's says how many holders to wait
//! for, so it must be counted whenever it comes).

use crate::config::Placement;
use crate::mesh::Msg;

use super::harness::{config, delivered_reply, id_owned_by, send_request, Harness};

/// Shard 0 holds a publisher and subscribers under `x` (owned by shard 1) and `y` (owned by
/// shard 0); shard 1 holds one under `x`. The publisher pipelines a send to `x`, then one to
/// `y`. The reply to `y` is ready at once but waits behind `x`'s; shard 0's holder reply to
/// `x` is counted before the owner's, which alone does not complete `x`; then both replies
/// go out, `x`'s first.
#[test]
fn pipelined_replies_in_request_order_when_holders_overtake_the_owner() {
    let mut h = Harness::new(config(2, |c| c.placement = Placement::Accept));
    let (x, y) = (id_owned_by(1, 2), id_owned_by(0, 2));
    let x_sub = format!("/sub/{x}");
    let (home, holder) = h.subscribe(0, 10_001, &x_sub);
    assert_eq!(home, 0, "placement accept keeps the holder on shard 0");
    let (_, owned) = h.subscribe(1, 10_002, &x_sub);
    let (_, local) = h.subscribe(0, 10_003, &format!("/sub/{y}"));
    for (s, fd) in [(0, holder), (1, owned), (0, local)] {
        assert!(!h.read(s, fd).is_empty(), "stream head of {fd}");
    }

    h.publisher(0, 10_004);
    let mut pipelined = send_request(&x, b"one");
    pipelined.extend_from_slice(&send_request(&y, b"two"));
    h.write(0, 10_004, &pipelined);
    assert!(
        h.io[0].sends(10_004).is_empty(),
        "y's reply must wait for x's"
    );

    // The owner routes x: its batch for shard 0 holds the delivery to the holder and the
    // owner's own reply. Hand them over holder first.
    h.turn(1);
    let batch = h.mesh.pop(0).expect("the owner answered shard 0");
    assert!(h.mesh.pop(0).is_none(), "one batch per turn");
    let (deliver, owner): (Vec<Msg>, Vec<Msg>) = batch
        .into_iter()
        .partition(|m| matches!(m, Msg::Deliver { .. }));
    assert_eq!(deliver.len(), 1, "one holder to deliver to");
    assert!(
        matches!(
            owner[..],
            [Msg::Replied {
                more: Some(1),
                count: 1,
                ..
            }]
        ),
        "the owner's reply: one local delivery, one holder to wait for: {owner:?}"
    );
    h.mesh.push(0, deliver);
    h.turn(0);
    assert!(
        h.io[0].sends(10_004).is_empty(),
        "a holder's reply alone does not complete the publish"
    );
    h.mesh.push(0, owner);
    h.turn(0);

    let mut expected = delivered_reply(2);
    expected.extend_from_slice(&delivered_reply(1));
    assert_eq!(h.read(0, 10_004), expected, "x's reply, then y's");
    assert_eq!(h.read(0, holder), b"3\r\none\r\n");
    assert_eq!(h.read(1, owned), b"3\r\none\r\n");
    assert_eq!(h.read(0, local), b"3\r\ntwo\r\n");
}
