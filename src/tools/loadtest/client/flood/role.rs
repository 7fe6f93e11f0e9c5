//! The flood's half of the subscriber loop: every unit checked ([`Framing::check_unit`](crate::tools::loadtest::wire::framing::Framing::check_unit)),
//! heads and ends counted for the `Stats:` line and the result, churned subscribers picked
//! and restarted ([`FloodConfig::churn_per_min`]).

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::resume::Resume;
use super::{FloodConfig, FloodResult, FloodShared, Gap};
use crate::tools::loadtest::client::connect::{loopback_source, CONNS_PER_SOURCE};
use crate::tools::loadtest::client::msggen::XorShift;
use crate::tools::loadtest::client::subscriber::{End, Role, Turn};
use crate::tools::loadtest::host::proc::now_us;
use crate::tools::loadtest::wire::check::Checker;
use crate::tools::loadtest::wire::chunk::Unit;

/// Most end reasons kept.
const MAX_NOTES: usize = 5;

/// Churn state: when it started, what it did, and the open absences.
#[derive(Default)]
struct Churn {
    started: Option<Instant>,
    /// Turns taken (the clock's count; a pick already away is skipped, not a leave).
    picks: u64,
    /// Subscribers that really left.
    churned: u64,
    reconnected: u64,
    gaps: Vec<Gap>,
    /// Connection index -> its open gap in `gaps`.
    open: HashMap<u32, usize>,
    rng: Option<XorShift>,
}

/// Heads and ends.
#[derive(Default)]
struct Counts {
    connected: u64,
    closed: u64,
    connect_failed: u64,
    broken: u64,
}

/// The flood in the loop.
pub(super) struct FloodRole {
    cfg: FloodConfig,
    /// Source addresses spread over (1: the kernel's choice).
    sources: u32,
    checker: Checker,
    res: Counts,
    notes: Vec<String>,
    shared: Arc<FloodShared>,
    churn: Churn,
    /// With a resuming transport: decoders, cursors, figures.
    resume: Option<Resume>,
    next_stats: Option<Instant>,
}

impl FloodRole {
    /// The role for `cfg`, publishing its counters to `shared`.
    pub(super) fn new(cfg: FloodConfig, shared: Arc<FloodShared>) -> FloodRole {
        let sources = match (cfg.source_addrs, cfg.url.addr.ip()) {
            (0, IpAddr::V4(ip)) if ip.is_loopback() => cfg.count.div_ceil(CONNS_PER_SOURCE) as u32,
            (0, _) => 1,
            (n, _) => n,
        };
        let mut checker = Checker::new(cfg.strict, cfg.seq_limit);
        checker.latency_from_seq = cfg.latency_from_seq;
        checker.local_seqs = cfg.local_seqs.clone();
        checker.one_id = !cfg.url.has_id();
        FloodRole {
            resume: Resume::new(cfg.transport, cfg.count as usize),
            cfg,
            sources,
            checker,
            res: Counts::default(),
            notes: Vec::new(),
            shared,
            churn: Churn::default(),
            next_stats: None,
        }
    }

    /// What the run saw.
    pub(super) fn result(self) -> FloodResult {
        FloodResult {
            checker: self.checker,
            connected: self.res.connected,
            closed: self.res.closed,
            connect_failed: self.res.connect_failed,
            broken: self.res.broken,
            notes: self.notes,
            gaps: self.churn.gaps,
            churned: self.churn.churned,
            reconnected: self.churn.reconnected,
            resume: self.resume.map(|r| r.fig),
        }
    }

    /// Picks the subscribers whose churn turn has come (see
    /// [`FloodConfig::churn_per_min`]) and has them restarted; starts the clock once every
    /// connection is up.
    fn churn_due(&mut self, turn: &mut Turn<'_, u32>, now: Instant) {
        // Held (the drain): nobody new leaves, the ones away come back.
        if self.shared.churn_hold.load(Relaxed) {
            return;
        }
        let start = match self.churn.started {
            Some(s) => s,
            None if self.res.connected == self.cfg.count => *self.churn.started.insert(now),
            None => return,
        };
        let per_s = self.cfg.count as f64 * self.cfg.churn_per_min / 100.0 / 60.0;
        let due = (now.duration_since(start).as_secs_f64() * per_s) as u64;
        let rng = self
            .churn
            .rng
            .get_or_insert_with(|| XorShift::new(0x005e_edc4));
        let mut picks = Vec::new();
        for _ in self.churn.picks..due {
            picks.push((rng.next_u64() % self.cfg.count) as usize);
        }
        for i in picks {
            // One already away (still reconnecting) is not picked twice.
            if turn.streaming(i) && !self.churn.open.contains_key(&(i as u32)) {
                // Every other one with a RST, the rest with a FIN.
                turn.restart(i, self.churn.gaps.len() % 2 == 1);
                if let Some(r) = &mut self.resume {
                    r.restarting(i);
                }
                self.churn.open.insert(i as u32, self.churn.gaps.len());
                self.churn.gaps.push(Gap {
                    id: self.id(i),
                    from_us: now_us(),
                    to_us: u64::MAX,
                });
                self.churn.churned += 1;
                self.shared.churned.store(self.churn.churned, Relaxed);
            }
            self.churn.picks += 1;
        }
    }

    fn print_stats(&self) {
        let line = format!(
            "Stats: {{{},{},{}}}\n",
            self.res.connected, self.res.closed, self.checker.counts.chunks
        );
        // A closed stdout must not stop the test: ignore write errors.
        let _ = if self.cfg.stats_to_stderr {
            io::stderr().lock().write_all(line.as_bytes())
        } else {
            let mut out = io::stdout().lock();
            out.write_all(line.as_bytes()).and_then(|_| out.flush())
        };
    }
}

impl Role for FloodRole {
    type Per = u32;

    fn id(&self, i: usize) -> u64 {
        match &self.cfg.ids {
            Some(ids) => ids[i],
            None => self.cfg.first_id + i as u64,
        }
    }

    fn source(&self, i: usize) -> Option<Ipv4Addr> {
        (self.sources > 1).then(|| loopback_source(i as u32 % self.sources))
    }

    fn tick(&mut self, turn: &mut Turn<'_, u32>, now: Instant) -> Duration {
        let next_stats = self.next_stats.get_or_insert(now + Duration::from_secs(1));
        if now >= *next_stats {
            *next_stats += Duration::from_secs(1);
            self.print_stats();
        }
        let wait = self
            .next_stats
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        if self.cfg.churn_per_min > 0.0 {
            self.churn_due(turn, now);
        }
        wait.min(Duration::from_millis(100))
    }

    fn after_events(&mut self) {
        self.shared
            .chunks
            .store(self.checker.counts.chunks, Relaxed);
        self.shared
            .received
            .store(self.checker.received.count(), Relaxed);
    }

    fn write_query(&self, i: usize, out: &mut Vec<u8>) {
        if let Some(r) = &self.resume {
            r.write_query(i, out);
        }
    }

    fn write_headers(&self, i: usize, out: &mut Vec<u8>) {
        if let Some(t) = &self.cfg.tokens {
            if let Some(t) = t.get(i) {
                out.extend_from_slice(b"Authorization: Bearer ");
                out.extend_from_slice(t.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        if let Some(r) = &self.resume {
            r.write_headers(i, out);
        }
    }

    fn on_unit(&mut self, i: usize, last_n: &mut u32, unit: Unit<'_>, now_us: u64) {
        let id = self.id(i);
        if let Some(r) = &mut self.resume {
            return r.on_unit(i, id, unit, now_us, &mut self.checker);
        }
        match unit {
            Unit::Data(d) => self
                .cfg
                .framing
                .check_unit(&mut self.checker, id, last_n, d, now_us),
            // A WebSocket ping: the server's heartbeat.
            Unit::Ping => self.checker.counts.heartbeats += 1,
            Unit::Head(_) => {}
        }
    }

    fn on_head(&mut self, i: usize, now_us: u64) {
        if let Some(g) = self.churn.open.remove(&(i as u32)) {
            self.churn.gaps[g].to_us = now_us;
            self.churn.reconnected += 1;
            self.shared
                .reconnected
                .store(self.churn.reconnected, Relaxed);
        } else {
            self.res.connected += 1;
            self.shared.connected.store(self.res.connected, Relaxed);
        }
    }

    fn on_end(&mut self, i: usize, head: bool, why: &End) {
        if let End::Stream(_) = why {
            self.res.broken += 1;
            self.checker.counts.garbled += 1;
        }
        if !head {
            self.res.connect_failed += 1;
        }
        self.res.closed += 1;
        self.shared.closed.store(self.res.closed, Relaxed);
        if self.notes.len() < MAX_NOTES {
            self.notes.push(format!("id {}: {why}", self.id(i)));
        }
    }
}
