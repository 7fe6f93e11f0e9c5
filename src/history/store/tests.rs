//! The store's bounds and verdicts, in memory.

use super::{History, HistoryConfig, Reason, MSG_OVERHEAD, STREAM_OVERHEAD};
use crate::history::cursor::Pos;
use crate::history::Pin;
use crate::id::Id;

fn history(max_msgs: usize, ttl_ms: u64, memory: usize) -> History {
    History::new(HistoryConfig {
        max_msgs,
        ttl_ms,
        memory,
    })
}

fn held(h: &History, id: &Id, after: u64) -> Vec<(u64, Vec<u8>)> {
    h.messages_after(id, after)
        .map(|(o, d)| (o, d.to_vec()))
        .collect()
}

#[test]
fn numbers_from_one_under_the_implicit_epoch() {
    let mut h = history(4, 60_000, 1 << 20);
    let id = Id::Num(7);
    let before = h.position(&id, Pin::NONE);
    assert_eq!(before.offset, 0);
    assert_ne!(before.epoch, 0);
    let p1 = h.append(&id, b"a", 0, Pin::NONE);
    let p2 = h.append(&id, b"b", 0, Pin::NONE);
    assert_eq!((p1.epoch, p1.offset, p2.offset), (before.epoch, 1, 2));
    // A cursor handed out before the first message resumes from the start.
    assert_eq!(h.resume(&id, Some(before), Pin::NONE), Ok(0));
    assert_eq!(
        held(&h, &id, 0),
        vec![(1, b"a".to_vec()), (2, b"b".to_vec())]
    );
    assert_eq!(held(&h, &id, 1), vec![(2, b"b".to_vec())]);
    assert_eq!(held(&h, &id, 2), vec![]);
    assert_eq!(h.resume(&id, Some(p2), Pin::NONE), Ok(2));
    assert_eq!(h.resume(&id, None, Pin::NONE), Ok(0));
}

#[test]
fn count_bound_expires_old_positions() {
    let mut h = history(4, 60_000, 1 << 20);
    let id = Id::Num(1);
    let start = h.position(&id, Pin::NONE);
    for k in 0..10u8 {
        h.append(&id, &[k], 0, Pin::NONE);
    }
    assert_eq!(h.resume(&id, Some(start), Pin::NONE), Err(Reason::Expired));
    let at5 = Pos {
        epoch: start.epoch,
        offset: 5,
    };
    assert_eq!(h.resume(&id, Some(at5), Pin::NONE), Err(Reason::Expired));
    let at6 = Pos { offset: 6, ..at5 };
    assert_eq!(h.resume(&id, Some(at6), Pin::NONE), Ok(6));
    assert_eq!(held(&h, &id, 6).len(), 4);
    assert_eq!(h.resume(&id, None, Pin::NONE), Ok(6));
    let future = Pos { offset: 11, ..at5 };
    assert_eq!(
        h.resume(&id, Some(future), Pin::NONE),
        Err(Reason::UnknownOffset)
    );
    let other = Pos {
        epoch: start.epoch ^ 1,
        ..at6
    };
    assert_eq!(
        h.resume(&id, Some(other), Pin::NONE),
        Err(Reason::UnknownEpoch)
    );
    assert_eq!(h.counts().1, 4);
}

#[test]
fn ttl_drops_the_stream_and_a_new_one_has_a_new_epoch() {
    let mut h = history(8, 1_000, 1 << 20);
    let id = Id::Num(3);
    let p = h.append(&id, b"x", 0, Pin::NONE);
    h.expire(999);
    assert_eq!(h.counts().1, 1);
    h.expire(1_000);
    assert_eq!(h.counts(), (0, 0, 0, 0));
    // Retired: while someone is subscribed, the position stands.
    h.settle(8, |_| true);
    assert_eq!(h.resume(&id, Some(p), Pin::NONE), Ok(1));
    h.settle(8, |_| false);
    assert_eq!(h.resume(&id, Some(p), Pin::NONE), Err(Reason::UnknownEpoch));
    let q = h.append(&id, b"y", 2_000, Pin::NONE);
    assert_ne!(q.epoch, p.epoch);
    assert_eq!(q.offset, 1);
}

#[test]
fn a_subscribed_stream_keeps_its_epoch_past_the_ttl() {
    let mut h = history(8, 1_000, 1 << 20);
    let id = Id::Num(4);
    let p0 = h.position(&id, Pin::NONE);
    let p1 = h.append(&id, b"a", 0, Pin::NONE);
    h.append(&id, b"b", 10, Pin::NONE);
    h.expire(5_000);
    h.settle(8, |_| true);
    assert_eq!(h.counts().1, 0, "nothing held");
    assert_eq!(h.resume(&id, Some(p0), Pin::NONE), Err(Reason::Expired));
    assert_eq!(h.resume(&id, Some(p1), Pin::NONE), Err(Reason::Expired));
    let p2 = Pos { offset: 2, ..p1 };
    assert_eq!(
        h.resume(&id, Some(p2), Pin::NONE),
        Ok(2),
        "the current position recovers"
    );
    // Numbering goes on under the same epoch.
    assert_eq!(
        h.append(&id, b"c", 6_000, Pin::NONE),
        Pos { offset: 3, ..p1 }
    );
    assert_eq!(h.counts().0, 1);
}

#[test]
fn memory_cap_evicts_the_oldest_of_any_id() {
    let per = 100 + MSG_OVERHEAD;
    let mut h = history(32, 60_000, 2 * STREAM_OVERHEAD + 3 * per);
    let (a, b) = (Id::Num(1), Id::Num(2));
    let a0 = h.position(&a, Pin::NONE);
    h.append(&a, &[0; 100], 0, Pin::NONE);
    h.append(&b, &[0; 100], 1, Pin::NONE);
    h.append(&a, &[0; 100], 2, Pin::NONE);
    assert_eq!(h.counts().3, 0);
    h.append(&b, &[0; 100], 3, Pin::NONE);
    // a's first message was the oldest.
    assert_eq!(h.counts().3, 1);
    assert_eq!(h.resume(&a, Some(a0), Pin::NONE), Err(Reason::Expired));
    assert_eq!(held(&h, &a, 0).len(), 1);
    assert_eq!(held(&h, &b, 0).len(), 2);
    assert!(h.counts().2 <= 2 * STREAM_OVERHEAD + 3 * per);
}

#[test]
fn stale_entries_are_compacted_and_slots_reused() {
    let mut h = history(2, 10, 1 << 30);
    for round in 0..3u64 {
        for k in 0..10_000u64 {
            h.append(&Id::Num(k % 3), b"m", round * 100, Pin::NONE);
        }
        assert!(h.fifo.len() <= 2 * h.held + 4096);
        h.expire(round * 100 + 50);
        h.settle(16, |_| false);
        assert_eq!(h.counts(), (0, 0, 0, 0));
    }
    // Three ids, never more than three stream records.
    assert!(h.streams.len() <= 3, "{}", h.streams.len());
}

#[test]
fn off_keeps_nothing() {
    let h = history(0, 1, 1);
    assert_eq!(
        h.resume(&Id::Num(1), None, Pin::NONE),
        Err(Reason::NoHistory)
    );
    assert!(h.gens.is_empty());
}

/// Two ids whose generations share a bucket.
fn bucket_mates(h: &History) -> (Id, Id) {
    let bucket = |id: &Id| h.hasher.hash_one(id) as usize & (super::GEN_BUCKETS - 1);
    let a = Id::Num(1);
    let b = (2..)
        .map(Id::Num)
        .find(|b| bucket(b) == bucket(&a))
        .expect("a bucket mate");
    (a, b)
}

#[test]
fn a_pinned_id_keeps_its_implicit_epoch_when_a_bucket_mate_is_dropped() {
    let mut h = history(8, 1_000, 1 << 20);
    let (a, b) = bucket_mates(&h);
    // A subscriber of `a` is handed its position; the router pins it.
    let pin = h.pin_now(&a);
    let given = h.position(&a, pin);
    // `b`'s stream expires and is dropped: the bucket's generation moves on.
    h.append(&b, b"x", 0, Pin::NONE);
    h.expire(1_000);
    h.settle(8, |_| false);
    assert_ne!(
        h.position(&a, Pin::NONE),
        given,
        "unpinned, the implicit epoch moved (the fault a pin prevents)"
    );
    assert_eq!(h.position(&a, pin), given);
    assert_eq!(h.resume(&a, Some(given), pin), Ok(0));
    // The first message of `a` continues the epoch its subscribers were given.
    let p1 = h.append(&a, b"m", 1_000, pin);
    assert_eq!((p1.epoch, p1.offset), (given.epoch, 1));
    assert_eq!(h.resume(&a, Some(given), pin), Ok(0));
    // Once nobody is subscribed and the stream is dropped, a new pin gives a new epoch.
    h.expire(2_000);
    h.settle(8, |_| false);
    let again = h.position(&a, h.pin_now(&a));
    assert_ne!(again.epoch, given.epoch);
    assert_eq!(
        h.resume(&a, Some(p1), h.pin_now(&a)),
        Err(Reason::UnknownEpoch)
    );
}

#[test]
fn an_emptied_history_drops_its_tables_and_keeps_epochs_new() {
    let mut h = history(8, 1_000, 1 << 20);
    let ids: Vec<Id> = (1..=100).map(Id::Num).collect();
    let old: Vec<Pos> = ids
        .iter()
        .map(|id| h.append(id, b"m", 0, Pin::NONE))
        .collect();
    // Held, then retired but subscribed: nothing to release yet.
    assert!(!h.release_if_empty());
    h.expire(1_000);
    h.settle(1_000, |_| true);
    assert!(!h.release_if_empty(), "retired streams still pinned");
    h.settle(1_000, |_| false);
    assert!(h.release_if_empty());
    assert_eq!(h.streams.capacity(), 0);
    assert_eq!(h.index.capacity(), 0);
    assert_eq!(h.fifo.capacity(), 0);
    assert!(!h.release_if_empty(), "nothing left to release");
    // The streams come back under new epochs; old cursors stay unknown.
    for (id, p) in ids.iter().zip(&old) {
        let q = h.append(id, b"n", 2_000, Pin::NONE);
        assert_ne!(q.epoch, p.epoch);
        assert_eq!(q.offset, 1);
        assert_eq!(h.resume(id, Some(*p), Pin::NONE), Err(Reason::UnknownEpoch));
        assert_eq!(held(&h, id, 0), vec![(1, b"n".to_vec())]);
    }
    assert_eq!(h.counts().0, 100);
}
