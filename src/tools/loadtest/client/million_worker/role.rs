//! The million worker's half of the subscriber loop: each chunk checked against the one
//! message its stream must carry ([`check_chunk`]), heads and ends counted for the `P` lines,
//! the verdict built from every connection's count of good messages.

use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::lines::{lat_bucket, Progress, Verdict, LAT_BUCKETS};
use super::WorkerArgs;
use crate::tools::loadtest::client::subscriber::{End, Role, Turn};
use crate::tools::loadtest::wire::check::single::{check_chunk, Check};
use crate::tools::loadtest::wire::chunk::Unit;

/// Most problem notes kept.
const MAX_NOTES: usize = 3;

/// The worker in the loop.
pub(super) struct WorkerRole {
    a: WorkerArgs,
    p: Progress,
    v: Verdict,
    next_report: Option<Instant>,
    /// With `--reconnect`: good messages per connection over all its reconnections.
    totals: Vec<u8>,
    /// With `--reconnect`: connections the server ended, to connect again at the next tick.
    again: Vec<usize>,
    /// With `--token-secret`: the key each request's token is signed with.
    token_key: Option<jsonwebtoken::EncodingKey>,
}

impl WorkerRole {
    /// The role for the worker's flags.
    pub(super) fn new(a: WorkerArgs) -> WorkerRole {
        WorkerRole {
            p: Progress::default(),
            v: Verdict {
                count: a.count,
                lat: vec![0; LAT_BUCKETS],
                ..Verdict::default()
            },
            totals: if a.reconnect {
                vec![0; a.count as usize]
            } else {
                Vec::new()
            },
            again: Vec::new(),
            token_key: a.token_secret.as_ref().map(|p| {
                let mut s = std::fs::read(p).unwrap_or_default();
                if s.last() == Some(&b'\n') {
                    s.pop();
                }
                jsonwebtoken::EncodingKey::from_secret(&s)
            }),
            a,
            next_report: None,
        }
    }

    /// Prints the `P` line.
    pub(super) fn report(&self) {
        // A closed stdout (the parent is gone) must not stop the worker: stdin ends it.
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{}", self.p.line()).and_then(|_| out.flush());
    }

    /// The verdict over every connection, from each one's count of good messages (`goods`,
    /// by index), with this process's CPU time (ms) and peak RSS (bytes).
    pub(super) fn verdict(mut self, goods: &[u32], cpu_ms: u64, hwm: u64) -> Verdict {
        let v = &mut self.v;
        // With `--reconnect` a connection's count restarts with each new connection.
        let totals: Vec<u32> = self.totals.iter().map(|&t| u32::from(t)).collect();
        let goods = if self.a.reconnect { &totals[..] } else { goods };
        for &good in goods {
            match good {
                0 => v.missing += 1,
                1 => v.exact += 1,
                _ => v.extra += 1,
            }
        }
        v.connected = self.p.connected;
        v.failed = self.p.failed;
        v.closed = self.p.closed;
        v.bad = self.p.bad;
        v.cpu_ms = cpu_ms;
        v.hwm = hwm;
        self.v
    }

    fn note(&mut self, what: String) {
        if self.v.notes.len() < MAX_NOTES {
            self.v.notes.push(what);
        }
    }
}

impl Role for WorkerRole {
    type Per = u32;

    fn id(&self, i: usize) -> u64 {
        self.a.first_id + i as u64
    }

    fn source(&self, i: usize) -> Option<Ipv4Addr> {
        Some(self.a.source[i % self.a.source.len()])
    }

    fn write_headers(&self, i: usize, out: &mut Vec<u8>) {
        if let Some(key) = &self.token_key {
            let claims = crate::auth::sign::Claims {
                sub: Some(self.id(i).to_string()),
                exp: Some(crate::auth::sign::unix_now() + 3_600),
                ..Default::default()
            };
            let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            if let Ok(t) = jsonwebtoken::encode(&header, &claims, key) {
                out.extend_from_slice(b"Authorization: Bearer ");
                out.extend_from_slice(t.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    fn tick(&mut self, turn: &mut Turn<'_, u32>, now: Instant) -> Duration {
        for i in self.again.drain(..) {
            turn.restart(i, false);
        }
        let every = Duration::from_millis(self.a.report_ms.max(10));
        let next = self.next_report.get_or_insert(now);
        if now >= *next {
            *next += every;
            self.report();
        }
        self.next_report
            .map_or(every, |t| t.saturating_duration_since(now))
    }

    fn on_unit(&mut self, i: usize, good: &mut u32, unit: Unit<'_>, now_us: u64) {
        let Unit::Data(chunk) = unit else {
            return;
        };
        let id = self.id(i);
        match check_chunk(id, *good, chunk, now_us) {
            Check::Good(lat) => {
                *good += 1;
                if let Some(t) = self.totals.get_mut(i) {
                    *t = t.saturating_add(1);
                }
                self.p.received += 1;
                self.v.lat[lat_bucket(lat)] += 1;
            }
            Check::Heartbeat => self.v.heartbeats += 1,
            Check::Bad(why) => {
                self.p.bad += 1;
                let shown = String::from_utf8_lossy(chunk);
                self.note(format!("id {id}: {why}: {shown:?}"));
            }
        }
    }

    fn on_head(&mut self, _: usize, _: u64) {
        self.p.connected += 1;
    }

    fn on_end(&mut self, i: usize, head: bool, why: &End) {
        if let End::Stream(_) = why {
            self.p.bad += 1;
        }
        if head {
            self.p.closed += 1;
            if self.a.reconnect && matches!(why, End::Finished | End::PeerClosed) {
                self.again.push(i);
                return; // an expected end: no note
            }
        } else {
            self.p.failed += 1;
        }
        let id = self.id(i);
        match why {
            End::Finished => self.note(format!("id {id}: server ended the stream")),
            why => self.note(format!("id {id}: {why}")),
        }
    }
}
