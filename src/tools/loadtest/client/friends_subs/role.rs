//! The logins' half of the subscriber loop: each chunk checked as a friends event
//! ([`parse_friend_chunk`], [`check_chunk`]), heads and ends counted, latency taken per
//! delivery and per event size ([`FANOUT_BUCKETS`]).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{SubsConfig, SubsResult, SubsShared, FANOUT_BUCKETS, MAX_NOTES};
use crate::tools::loadtest::client::connect::{loopback_source, CONNS_PER_SOURCE};
use crate::tools::loadtest::client::subscriber::{End, Role, Turn};
use crate::tools::loadtest::wire::check::{parse_body, parse_friend_chunk};
use crate::tools::loadtest::wire::chunk::Unit;

/// The logins in the loop.
pub(super) struct FriendsRole {
    cfg: SubsConfig,
    /// Source addresses spread over (127.0.0.1, .2, ...).
    sources: u32,
    res: SubsResult,
    shared: Arc<SubsShared>,
}

impl FriendsRole {
    /// The role for `cfg`, counting into `res`, publishing counters to `shared`.
    pub(super) fn new(cfg: SubsConfig, res: SubsResult, shared: Arc<SubsShared>) -> FriendsRole {
        let sources = (cfg.users.len() as u64).div_ceil(CONNS_PER_SOURCE).max(1) as u32;
        FriendsRole {
            cfg,
            sources,
            res,
            shared,
        }
    }

    /// What the loop saw.
    pub(super) fn into_result(self) -> SubsResult {
        self.res
    }

    /// The user of connection `i`.
    fn user(&self, i: usize) -> u32 {
        self.cfg.users[self.cfg.mine[i]]
    }

    /// Keeps one of the first few problems.
    fn note(&mut self, s: String) {
        if self.res.notes.len() < MAX_NOTES {
            self.res.notes.push(s);
        }
    }
}

impl Role for FriendsRole {
    type Per = u64;

    fn id(&self, i: usize) -> u64 {
        u64::from(self.user(i))
    }

    fn source(&self, i: usize) -> Option<Ipv4Addr> {
        Some(loopback_source(self.cfg.mine[i] as u32 % self.sources))
    }

    fn tick(&mut self, _: &mut Turn<'_, u64>, _: Instant) -> Duration {
        Duration::from_millis(20)
    }

    fn after_events(&mut self) {
        self.shared
            .received
            .store(self.res.got.len() as u64, Relaxed);
    }

    fn on_unit(&mut self, i: usize, last_n: &mut u64, unit: Unit<'_>, now_us: u64) {
        if let Unit::Data(d) = unit {
            let (g, user) = (self.cfg.mine[i], self.user(i));
            check_chunk(
                &mut self.res,
                &self.cfg.recipients,
                g,
                user,
                last_n,
                d,
                now_us,
            );
        }
    }

    fn on_head(&mut self, _: usize, _: u64) {
        self.res.connected += 1;
        self.shared.connected.store(self.res.connected, Relaxed);
    }

    fn on_end(&mut self, i: usize, _: bool, why: &End) {
        if let End::Stream(_) = why {
            self.res.garbled += 1;
        }
        self.res.closed += 1;
        self.shared.closed.store(self.res.closed, Relaxed);
        let user = self.user(i);
        match why {
            End::PeerClosed => self.note(format!("user {user}: server closed the stream")),
            End::Request(e) => self.note(format!("user {user}: write: {e}")),
            why => self.note(format!("user {user}: {why}")),
        }
    }
}

/// Checks one chunk on connection `i` (user `user`).
pub(super) fn check_chunk(
    res: &mut SubsResult,
    recipients: &HashMap<u32, Vec<u32>>,
    i: usize,
    user: u32,
    last_n: &mut u64,
    d: &[u8],
    now: u64,
) {
    if d == b"\n" {
        res.heartbeats += 1;
        return;
    }
    let Some((n, from, body)) = parse_friend_chunk(d) else {
        res.garbled += 1;
        return;
    };
    if n != *last_n + 1 {
        res.out_of_order += 1;
    }
    *last_n = n;
    let Some((id, seq, t_us)) = parse_body(body) else {
        res.garbled += 1;
        return;
    };
    if id != from {
        res.garbled += 1;
        return;
    }
    let Some(r) = u32::try_from(from)
        .ok()
        .and_then(|f| recipients.get(&f))
        .filter(|r| r.binary_search(&user).is_ok())
    else {
        res.unexpected += 1;
        return;
    };
    if !res.got.insert(seq << 24 | i as u64) {
        res.duplicates += 1;
        return;
    }
    let us = now.saturating_sub(t_us).max(1);
    let _ = res.latency_us.record(us);
    let b = FANOUT_BUCKETS
        .iter()
        .rposition(|&lo| r.len() >= lo)
        .unwrap_or(0);
    let _ = res.by_fanout[b].record(us);
}

#[cfg(test)]
mod tests {
    use super::{check_chunk, parse_friend_chunk, SubsResult};
    use hdrhistogram::Histogram;
    use std::collections::HashMap;

    #[test]
    fn friend_chunks() {
        assert_eq!(
            parse_friend_chunk(b"Recvd msg #12 from 7: '7:3:99'<br/>\n"),
            Some((12, 7, &b"7:3:99"[..]))
        );
        assert_eq!(parse_friend_chunk(b"Recvd msg #12: '7:3:99'<br/>\n"), None);
        let mut res = SubsResult::empty(Histogram::new(3).unwrap(), 0);
        let rec: HashMap<u32, Vec<u32>> = [(7, vec![2, 5])].into_iter().collect();
        let mut last = 0;
        let c = |n: u64, from: u64, seq: u64| {
            format!("Recvd msg #{n} from {from}: '{from}:{seq}:100'<br/>\n").into_bytes()
        };
        check_chunk(&mut res, &rec, 0, 5, &mut last, &c(1, 7, 1), 150);
        check_chunk(&mut res, &rec, 0, 5, &mut last, &c(2, 7, 1), 150);
        check_chunk(&mut res, &rec, 0, 5, &mut last, &c(4, 7, 2), 150);
        check_chunk(&mut res, &rec, 0, 5, &mut last, &c(5, 8, 3), 150);
        assert_eq!(
            (
                res.got.len(),
                res.duplicates,
                res.out_of_order,
                res.unexpected
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(res.latency_us.max(), 50);
    }
}
