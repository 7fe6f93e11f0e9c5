//! Subscriber churn in the main job (`loadtest --churn PERCENT_PER_MIN`, `loadtest soak
//! --churn ...`): which lost messages are excused because their subscriber was away, and
//! whether the server is back to its baseline once every subscriber has left.
//!
//! A message counts as lost only if its subscriber stayed connected around it: no absence
//! ([`Gap`]) of its id overlaps the window from its publish request to
//! [`IN_FLIGHT_GRACE_US`] after its `200` answer. A message answered just before its
//! subscriber left may still have been in flight to the old connection, and one sent while
//! it was away had nobody to go to; both are excused (and counted, with how many of them
//! arrived anyway).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::flood::Gap;
use super::msggen::SendRecord;
use crate::tools::loadtest::wire::answer::fetch_stats;
use crate::tools::loadtest::wire::check::Bitmap;

/// How long after its `200` answer a message may still be on its way to a subscriber that
/// leaves (microseconds). Deliveries take ~0.1-1 ms here; 500 ms is far past any seen.
pub(crate) const IN_FLIGHT_GRACE_US: u64 = 500_000;

/// What churn did and what it excused.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ChurnFigures {
    /// Percent of the subscribers reconnecting per minute, as asked.
    pub(crate) per_min: f64,
    /// Subscribers closed on purpose.
    pub(crate) churned: u64,
    /// Of those, connected again.
    pub(crate) reconnected: u64,
    /// Messages answered `200` whose subscriber was away around them (see the module doc).
    pub(crate) excused: u64,
    /// Of those, received anyway.
    pub(crate) excused_received: u64,
}

/// Splits the messages answered `200` (`sends`) into lost and excused: returns
/// `(lost, excused, excused_received)`, where lost counts messages not in `received` whose
/// subscriber stayed connected around them.
pub(crate) fn account(sends: &[SendRecord], received: &Bitmap, gaps: &[Gap]) -> (u64, u64, u64) {
    let mut by_id: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
    for g in gaps {
        by_id.entry(g.id).or_default().push((g.from_us, g.to_us));
    }
    let (mut lost, mut excused, mut excused_received) = (0, 0, 0);
    for s in sends {
        let away = by_id.get(&s.id).is_some_and(|gs| {
            gs.iter().any(|&(from, to)| {
                s.sent_us <= to && s.answered_us.saturating_add(IN_FLIGHT_GRACE_US) >= from
            })
        });
        let got = received.contains(s.seq);
        match (away, got) {
            (true, true) => {
                excused += 1;
                excused_received += 1;
            }
            (true, false) => excused += 1,
            (false, false) => lost += 1,
            (false, true) => {}
        }
    }
    (lost, excused, excused_received)
}

/// The server once every subscriber has gone, against its readings before any connected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AfterLeave {
    /// `/stats` connections (subscriber listener), ids and direct-descriptor slots.
    pub(crate) connections: u64,
    pub(crate) ids: u64,
    pub(crate) slots: u64,
    /// Open fds of the server process, and before any subscriber connected.
    pub(crate) fds: u64,
    pub(crate) fds_baseline: u64,
    /// Server-side subscriber sockets still in CLOSE_WAIT and ESTABLISHED.
    pub(crate) close_wait: u64,
    pub(crate) established: u64,
    /// How long it took to settle (or the bound, if it never did), ms.
    pub(crate) settle_ms: u64,
}

impl AfterLeave {
    /// Back to baseline: nothing open, no slot held, no socket left half-closed, and at most
    /// one fd above the baseline (the `/stats` request's own connection).
    pub(crate) fn at_baseline(&self) -> bool {
        self.connections == 0
            && self.ids == 0
            && self.slots == 0
            && self.fds <= self.fds_baseline + 1
            && self.close_wait == 0
            && self.established == 0
    }

    /// Polls (every 50 ms, at most `limit`) until the server of `pid` is back to baseline,
    /// and returns the last reading.
    pub(crate) fn wait(
        pid: u32,
        sub: SocketAddr,
        publish: SocketAddr,
        fds_baseline: u64,
        limit: Duration,
    ) -> AfterLeave {
        let t0 = Instant::now();
        loop {
            let stats = fetch_stats(publish).unwrap_or_default();
            let get = |k: &str| {
                stats
                    .iter()
                    .find(|(key, _)| key == k)
                    .map_or(u64::MAX, |(_, v)| *v)
            };
            let r = AfterLeave {
                connections: get("connections"),
                ids: get("ids"),
                slots: get("direct_slots_in_use"),
                fds: fd_count(pid),
                fds_baseline,
                close_wait: sockets_in_state(sub, "08"),
                established: sockets_in_state(sub, "01"),
                settle_ms: t0.elapsed().as_millis() as u64,
            };
            if r.at_baseline() || t0.elapsed() >= limit {
                return r;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One line for the text report.
    pub(crate) fn line(&self) -> String {
        format!(
            "{} after {} ms: connections {}, ids {}, direct slots {}, fds {} (baseline {}; one \
             more is the /stats request's own), subscriber sockets in CLOSE_WAIT {}, ESTABLISHED {}",
            if self.at_baseline() {
                "back to baseline"
            } else {
                "NOT back to baseline"
            },
            self.settle_ms,
            self.connections,
            self.ids,
            self.slots,
            self.fds,
            self.fds_baseline,
            self.close_wait,
            self.established
        )
    }
}

/// Open fds of process `pid` (entries of `/proc/PID/fd`; `u64::MAX` if unreadable).
pub(crate) fn fd_count(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(u64::MAX, |d| d.count() as u64)
}

/// IPv4 TCP sockets of this network namespace whose local address is `addr` and whose state
/// is `state`, the hex code of `/proc/net/tcp` (01 ESTABLISHED, 08 CLOSE_WAIT).
pub(crate) fn sockets_in_state(addr: SocketAddr, state: &str) -> u64 {
    let SocketAddr::V4(v4) = addr else {
        return 0;
    };
    // /proc/net/tcp prints the address as the little-endian u32 in hex, then the port.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.ip().octets()),
        v4.port()
    );
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == local && f[3] == state
        })
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::{account, AfterLeave, Bitmap, Gap, SendRecord};

    fn send(seq: u64, id: u64, sent_us: u64, answered_us: u64) -> SendRecord {
        SendRecord {
            seq,
            id,
            sent_us,
            answered_us,
        }
    }

    #[test]
    fn only_messages_around_an_absence_are_excused() {
        let gaps = [Gap {
            id: 7,
            from_us: 10_000_000,
            to_us: 10_050_000,
        }];
        let sends = [
            // id 7, long before: must arrive.
            send(0, 7, 1_000_000, 1_000_100),
            // id 7, answered 100 ms before it left: may have been in flight.
            send(1, 7, 9_900_000, 9_900_100),
            // id 7, sent while away.
            send(2, 7, 10_010_000, 10_010_100),
            // id 7, after it was back: must arrive.
            send(3, 7, 10_060_000, 10_060_100),
            // another id at the same time: must arrive.
            send(4, 8, 10_010_000, 10_010_100),
        ];
        let mut received = Bitmap::default();
        received.insert(2); // an excused one that arrived anyway
                            // 0, 3 and 4 missing: three lost; 1 and 2 excused, 2 received.
        assert_eq!(account(&sends, &received, &gaps), (3, 2, 1));
        for s in [0, 3, 4] {
            received.insert(s);
        }
        assert_eq!(account(&sends, &received, &gaps), (0, 2, 1));
    }

    #[test]
    fn a_subscriber_that_never_came_back_excuses_everything_after() {
        let gaps = [Gap {
            id: 1,
            from_us: 5,
            to_us: u64::MAX,
        }];
        let sends = [
            send(0, 1, 100, 200),
            send(1, 1, 1_000_000_000, 1_000_000_001),
        ];
        assert_eq!(account(&sends, &Bitmap::default(), &gaps), (0, 2, 0));
    }

    #[test]
    fn baseline_allows_the_stats_connection_only() {
        let mut r = AfterLeave {
            fds: 11,
            fds_baseline: 10,
            ..AfterLeave::default()
        };
        assert!(r.at_baseline());
        r.fds = 12;
        assert!(!r.at_baseline());
        r.fds = 10;
        r.close_wait = 1;
        assert!(!r.at_baseline());
        r.close_wait = 0;
        r.slots = 1;
        assert!(!r.at_baseline());
    }
}
