//! Unit tests of the router: login, logout, the directory and its acknowledgements, in memory.

use bytes::Bytes;

use super::Router;
use crate::history::Pos;
use crate::id::Id;
use crate::mesh::{Msg, Outbox, ReplyTo};

/// An id owned by shard `want` of 2.
fn id_owned_by(want: usize) -> Id {
    (1..).map(Id::Num).find(|id| id.owner(2) == want).unwrap()
}

#[test]
fn local_login_logout() {
    let (mut r, mut out) = (Router::new(0, 2, 16), Outbox::new(2));
    let id = id_owned_by(0);
    let (h1, w1) = r.login(&mut out, 7, vec![id.clone()]);
    let (h2, w2) = r.login(&mut out, 8, vec![id.clone()]);
    assert_eq!((w1, w2), (0, 0));
    let s = r.lookup(&id).unwrap();
    assert_eq!(r.subscribers(s), &[7, 8]);
    assert_eq!(r.owned_ids(), 1);
    r.logout(&mut out, 7, h1);
    assert_eq!(r.subscribers(s), &[8]);
    r.logout(&mut out, 8, h2);
    assert!(r.lookup(&id).is_none());
    assert_eq!(r.owned_ids(), 0);
    assert!(out.is_empty());
}

#[test]
fn remote_owner_join_ack_leave() {
    let (mut holder, mut owner) = (Router::new(0, 2, 16), Router::new(1, 2, 16));
    let (mut to_owner, mut to_holder) = (Outbox::new(2), Outbox::new(2));
    let id = id_owned_by(1);
    let (h, waits) = holder.login(&mut to_owner, 3, vec![id.clone()]);
    assert_eq!(waits, 1);
    let Some(Msg::Join { id: jid, from, seq }) = to_owner.pop(1) else {
        panic!()
    };
    owner.on_join(&mut to_holder, jid, from as usize, seq);
    assert_eq!(owner.owned_ids(), 1);
    let Some(Msg::JoinAck { id: aid, seq: aseq }) = to_holder.pop(0) else {
        panic!()
    };
    let s = holder.join_acked(&aid, aseq).unwrap();
    assert_eq!(holder.subscribers(s), &[3]);
    // A second connection after the ack waits for nothing.
    let (h2, waits2) = holder.login(&mut to_owner, 4, vec![id.clone()]);
    assert_eq!(waits2, 0);
    assert!(to_owner.is_empty());
    // Routing at the owner forwards to shard 0 only.
    let (local, fwd) = owner.route(
        &mut to_holder,
        &id,
        &Bytes::from_static(b"x"),
        Pos::default(),
        ReplyTo { shard: 1, token: 9 },
        0,
    );
    assert_eq!((local, fwd), (None, 1));
    assert!(matches!(to_holder.pop(0), Some(Msg::Deliver { .. })));
    holder.logout(&mut to_owner, 3, h);
    assert!(to_owner.is_empty());
    holder.logout(&mut to_owner, 4, h2);
    let Some(Msg::Leave { id: lid, from }) = to_owner.pop(1) else {
        panic!()
    };
    owner.on_leave(&lid, from as usize);
    assert_eq!(owner.owned_ids(), 0);
    assert_eq!(
        owner.route(
            &mut to_holder,
            &id,
            &Bytes::new(),
            Pos::default(),
            ReplyTo { shard: 1, token: 1 },
            0,
        ),
        (None, 0)
    );
}

#[test]
fn stale_ack_is_ignored() {
    let (mut holder, mut to_owner) = (Router::new(0, 2, 16), Outbox::new(2));
    let id = id_owned_by(1);
    let (h, _) = holder.login(&mut to_owner, 1, vec![id.clone()]);
    let Some(Msg::Join { seq: old, .. }) = to_owner.pop(1) else {
        panic!()
    };
    holder.logout(&mut to_owner, 1, h);
    let (_, waits) = holder.login(&mut to_owner, 2, vec![id.clone()]);
    assert_eq!(waits, 1);
    assert!(
        holder.join_acked(&id, old).is_none(),
        "ack of the old join must not release the new one"
    );
}

#[test]
fn many_ids_one_conn() {
    let (mut r, mut out) = (Router::new(0, 1, 16), Outbox::new(1));
    let ids: Vec<Id> = (1..=3).map(Id::Num).collect();
    let (h, _) = r.login(&mut out, 5, ids.clone());
    let (h6, _) = r.login(&mut out, 6, vec![Id::Num(2)]);
    for id in &ids {
        assert!(r.subscribers(r.lookup(id).unwrap()).contains(&5));
    }
    r.logout(&mut out, 5, h);
    assert!(r.lookup(&Id::Num(1)).is_none());
    assert_eq!(r.subscribers(r.lookup(&Id::Num(2)).unwrap()), &[6]);
    r.logout(&mut out, 6, h6);
    assert_eq!(r.owned_ids(), 0);
}

/// Presence edges on the owner: online at the first holder (local or a remote `Join`),
/// offline only once the last holder has been gone for the debounce; a flap within it
/// reports nothing; the slot (and its id) is kept meanwhile, and freed after.
#[test]
fn presence_edges_and_debounce() {
    let (mut r, mut out) = (Router::new(0, 2, 16), Outbox::new(2));
    r.enable_presence(100);
    let id = id_owned_by(0);
    let mut edges = Vec::new();
    r.set_presence_clock(1_000);
    let (h, _) = r.login(&mut out, 7, vec![id.clone()]);
    r.on_join(&mut out, id.clone(), 1, 1);
    r.take_presence(&mut edges);
    assert_eq!(
        edges,
        vec![(id.clone(), true)],
        "one online edge for two holders"
    );
    r.logout(&mut out, 7, h);
    r.on_leave(&id, 1);
    r.take_presence(&mut edges);
    assert_eq!(edges.len(), 1, "offline waits for the debounce");
    assert!(
        r.presence_waiting() && r.lookup(&id).is_some(),
        "the slot is kept meanwhile"
    );
    r.set_presence_clock(1_050);
    let (h, _) = r.login(&mut out, 8, vec![id.clone()]);
    r.set_presence_clock(1_200);
    r.take_presence(&mut edges);
    assert_eq!(
        edges.len(),
        1,
        "back within the debounce: no event either way"
    );
    r.logout(&mut out, 8, h);
    r.set_presence_clock(1_299);
    r.take_presence(&mut edges);
    assert_eq!(edges.len(), 1);
    r.set_presence_clock(1_300);
    r.take_presence(&mut edges);
    assert_eq!(edges, vec![(id.clone(), true), (id.clone(), false)]);
    assert!(
        r.lookup(&id).is_none() && !r.presence_waiting(),
        "freed after its offline"
    );
    assert_eq!(r.local_count(&id), 0);
}

/// A stall (the process stopped for 5 s) advances the debounce's clock by one step only, so
/// a reconnect that queued meanwhile and logs in on the next turns is no flap (case B42).
#[test]
fn presence_debounce_survives_a_stall() {
    let (mut r, mut out) = (Router::new(0, 1, 16), Outbox::new(1));
    r.enable_presence(1_000);
    let id = Id::Num(7);
    let mut edges = Vec::new();
    r.set_presence_clock(10);
    let (h, _) = r.login(&mut out, 1, vec![id.clone()]);
    r.logout(&mut out, 1, h);
    r.set_presence_clock(5_010);
    r.take_presence(&mut edges);
    assert_eq!(
        edges,
        vec![(id.clone(), true)],
        "5 s stalled is not 5 s without a connection"
    );
    r.set_presence_clock(5_030);
    let (_h, _) = r.login(&mut out, 2, vec![id.clone()]);
    r.set_presence_clock(9_000);
    r.take_presence(&mut edges);
    assert_eq!(
        edges,
        vec![(id.clone(), true)],
        "back: no offline, no second online"
    );
}
