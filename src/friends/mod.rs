//! The friends subscription store: who receives whose events (issue 7, "friends fan-out").
//!
//! Subscriptions are kept by the server, not sent by the client: a subscriber logs in under
//! its own numeric id and receives the events of everyone on its friends list. The store
//! keeps, for each user, the list of users that receive its events (its *followers*; in an
//! undirected graph, its friends), because that is what a publish needs.
//!
//! # Layout
//! - [`load`]: streams a SNAP edge list into per-shard CSR arrays ([`Csr`]).
//! - [`journal`]: the append-only journal of edits (`PUT`/`DELETE /friends/<a>/<b>`).
//! - [`lock`]: start-up checks of `--friends FILE`: its directory exists, and no other server
//!   uses it (an exclusive lock on `FILE.lock`, held while the server runs).
//!
//! # Ownership
//! The follower list of user `u` lives on `Id::Num(u).owner(shards)`, the shard that owns the
//! id by hash, like every other per-id state. Each shard's part is an immutable [`Csr`]
//! built at start plus a small overlay of edits ([`ShardGraph`]), read and written only by
//! that shard.
//!
//! # Edge semantics
//! A friendship `a b` in an undirected file means both receive each other's events. With
//! `--directed`, a line `u v` means u follows v (SNAP's `FromNodeId ToNodeId`): v is on u's
//! friends list, so u receives v's events. `PUT /friends/<a>/<b>` puts b on a's friends list
//! (a receives b's events; in an undirected graph b receives a's too).

pub mod journal;
pub mod load;
pub mod lock;

use std::collections::HashMap;
use std::io::Write;

use bytes::Bytes;

use crate::id::Id;

/// One friends event on its way to subscribers: who published it, the body, and the body
/// as the JSON object `{"from":"<user>","msg":"..."}` (made once, at the owner of `from`,
/// and shared by every delivery).
#[derive(Debug, Clone)]
pub struct FriendEvent {
    /// The publishing user.
    pub from: u32,
    /// The body as published.
    pub msg: Bytes,
    /// `{"from":"<user>","msg":"<body>"}`: what SSE, WebSocket and raw streams carry.
    pub json: Bytes,
    /// The SSE event type: `friend`, or `presence` for a friend's online/offline change.
    pub sse_event: &'static str,
}

impl FriendEvent {
    /// The event `msg` from user `from`. A body that is not UTF-8 is carried in the JSON
    /// with each invalid sequence replaced by U+FFFD (JSON strings are Unicode).
    pub fn new(from: u32, msg: Bytes) -> FriendEvent {
        let mut json = Vec::with_capacity(msg.len() + 32);
        let _ = write!(json, "{{\"from\":\"{from}\",\"msg\":");
        // Serialising a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut json, &String::from_utf8_lossy(&msg));
        json.push(b'}');
        FriendEvent {
            from,
            msg,
            json: Bytes::from(json),
            sse_event: "friend",
        }
    }

    /// User `from` came online or went offline (`--friends-presence`): SSE `event: presence`,
    /// JSON `{"from":"<user>","online":true|false}`, the seed's chunk says `online`/`offline`.
    pub fn presence(from: u32, online: bool) -> FriendEvent {
        let word: &'static [u8] = if online { b"online" } else { b"offline" };
        FriendEvent {
            from,
            msg: Bytes::from_static(word),
            json: Bytes::from(format!("{{\"from\":\"{from}\",\"online\":{online}}}")),
            sse_event: "presence",
        }
    }
}

/// The graph user behind an id, if it is one: a canonical decimal of at most 32 bits.
pub fn user_of(id: &Id) -> Option<u32> {
    match id {
        Id::Num(n) => u32::try_from(*n).ok(),
        Id::Str(_) => None,
    }
}

/// The shard that owns user `u` among `shards` (the owner of `Id::Num(u)`).
pub fn owner_of(u: u32, shards: usize) -> usize {
    Id::Num(u64::from(u)).owner(shards)
}

/// Compressed sparse rows: the follower lists of one shard's users.
///
/// `users` is sorted; user `users[r]` has followers `nbrs[offsets[r]..offsets[r + 1]]`,
/// sorted and without duplicates. 4 bytes per stored entry plus 8 per user with at least
/// one follower: for the issue's graph (1 M users, 50 M entries) 4.16 B per entry.
#[derive(Debug, Default)]
pub struct Csr {
    /// Users with at least one follower, ascending.
    pub users: Vec<u32>,
    /// Row starts into `nbrs`, `users.len() + 1` of them.
    pub offsets: Vec<u32>,
    /// Followers, row after row.
    pub nbrs: Vec<u32>,
}

impl Csr {
    /// The followers of `u` in the file (sorted), empty if none.
    pub fn row(&self, u: u32) -> &[u32] {
        match self.users.binary_search(&u) {
            Ok(r) => &self.nbrs[self.offsets[r] as usize..self.offsets[r + 1] as usize],
            Err(_) => &[],
        }
    }

    /// Stored (directed) entries.
    pub fn entries(&self) -> usize {
        self.nbrs.len()
    }

    /// Heap bytes held by the arrays (capacities).
    pub fn heap_bytes(&self) -> usize {
        4 * (self.users.capacity() + self.offsets.capacity() + self.nbrs.capacity())
    }
}

/// One shard's part of the store: the CSR loaded at start and the edits since (an overlay
/// of added and removed followers per user, each list small and unsorted).
#[derive(Debug, Default)]
pub struct ShardGraph {
    /// The follower lists from the file.
    pub csr: Csr,
    added: HashMap<u32, Vec<u32>>,
    removed: HashMap<u32, Vec<u32>>,
}

impl ShardGraph {
    /// A shard part over `csr` with no edits.
    pub fn new(csr: Csr) -> ShardGraph {
        ShardGraph {
            csr,
            added: HashMap::new(),
            removed: HashMap::new(),
        }
    }

    /// Appends the current followers of `u` to `out` (file minus removed, plus added).
    pub fn followers(&self, u: u32, out: &mut Vec<u32>) {
        let row = self.csr.row(u);
        match self.removed.get(&u) {
            Some(gone) => out.extend(row.iter().filter(|f| !gone.contains(f))),
            None => out.extend_from_slice(row),
        }
        if let Some(more) = self.added.get(&u) {
            out.extend_from_slice(more);
        }
    }

    /// Whether `f` currently follows `u`.
    pub fn has(&self, u: u32, f: u32) -> bool {
        if self.added.get(&u).is_some_and(|a| a.contains(&f)) {
            return true;
        }
        self.csr.row(u).binary_search(&f).is_ok()
            && !self.removed.get(&u).is_some_and(|r| r.contains(&f))
    }

    /// Makes `f` a follower of `u`; returns whether that changed anything.
    pub fn add(&mut self, u: u32, f: u32) -> bool {
        if take(&mut self.removed, u, f) {
            return true;
        }
        if self.csr.row(u).binary_search(&f).is_ok() {
            return false;
        }
        let a = self.added.entry(u).or_default();
        if a.contains(&f) {
            return false;
        }
        a.push(f);
        true
    }

    /// Makes `f` no follower of `u`; returns whether that changed anything.
    pub fn remove(&mut self, u: u32, f: u32) -> bool {
        if take(&mut self.added, u, f) {
            return true;
        }
        if self.csr.row(u).binary_search(&f).is_err() {
            return false;
        }
        let r = self.removed.entry(u).or_default();
        if r.contains(&f) {
            return false;
        }
        r.push(f);
        true
    }

    /// The overlay as (user, follower, added) triples, for compacting the journal.
    pub fn edits(&self) -> impl Iterator<Item = (u32, u32, bool)> + '_ {
        let adds = self
            .added
            .iter()
            .flat_map(|(&u, fs)| fs.iter().map(move |&f| (u, f, true)));
        let dels = self
            .removed
            .iter()
            .flat_map(|(&u, fs)| fs.iter().map(move |&f| (u, f, false)));
        adds.chain(dels)
    }

    /// Entries currently in the overlay (added + removed).
    pub fn overlay_len(&self) -> usize {
        self.added.values().map(Vec::len).sum::<usize>()
            + self.removed.values().map(Vec::len).sum::<usize>()
    }
}

/// Takes `f` off `u`'s list in overlay `side` (dropping a list it empties); returns whether
/// it was there.
fn take(side: &mut HashMap<u32, Vec<u32>>, u: u32, f: u32) -> bool {
    let Some(list) = side.get_mut(&u) else {
        return false;
    };
    let Some(at) = list.iter().position(|&x| x == f) else {
        return false;
    };
    list.swap_remove(at);
    if list.is_empty() {
        side.remove(&u);
    }
    true
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::{Csr, FriendEvent, ShardGraph};

    fn csr(rows: &[(u32, &[u32])]) -> Csr {
        let mut c = Csr::default();
        c.offsets.push(0);
        for (u, fs) in rows {
            c.users.push(*u);
            c.nbrs.extend_from_slice(fs);
            c.offsets.push(c.nbrs.len() as u32);
        }
        c
    }

    #[test]
    fn overlay_add_remove() {
        let mut g = ShardGraph::new(csr(&[(1, &[2, 3]), (5, &[1])]));
        let f = |g: &ShardGraph, u| {
            let mut v = Vec::new();
            g.followers(u, &mut v);
            v.sort();
            v
        };
        assert_eq!(f(&g, 1), vec![2, 3]);
        assert_eq!(f(&g, 4), Vec::<u32>::new());
        assert!(!g.add(1, 2), "already there");
        assert!(g.add(1, 9));
        assert!(!g.add(1, 9));
        assert!(g.remove(1, 2));
        assert!(!g.remove(1, 2));
        assert_eq!(f(&g, 1), vec![3, 9]);
        assert!(g.has(1, 9) && !g.has(1, 2) && g.has(1, 3));
        assert!(g.add(1, 2), "re-added from removed");
        assert!(g.remove(1, 9), "removed from added");
        assert_eq!(f(&g, 1), vec![2, 3]);
        assert_eq!(g.overlay_len(), 0);
        assert!(!g.remove(7, 1));
    }

    #[test]
    fn event_json_is_escaped() {
        let ev = FriendEvent::new(7, Bytes::from_static(b"a\"b\\c\n<\x01>"));
        assert_eq!(
            &ev.json[..],
            br#"{"from":"7","msg":"a\"b\\c\n<\u0001>"}"#.as_slice()
        );
        let bad = FriendEvent::new(1, Bytes::from_static(b"\xff"));
        assert_eq!(
            &bad.json[..],
            "{\"from\":\"1\",\"msg\":\"\u{fffd}\"}".as_bytes()
        );
    }
}
