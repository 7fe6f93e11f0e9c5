//! The test message format and the receiver's checks on every chunk.
//!
//! msggen sends `{id}:{seq}:{t_us}` (target id, unique sequence number, CLOCK_MONOTONIC send
//! time in microseconds): only digits and colons, so the server's HTML escaping leaves it alone
//! and the chunk must be exactly `Recvd msg #N: '{id}:{seq}:{t_us}'<br/>\n`. The receiver checks
//! the wrapper, that N is the previous N + 1 on that connection, that the id is the
//! connection's, and that no seq arrives twice; it records publish-to-receive latency.
//!
//! - [`room`]: `loadtest room`'s padded bodies and per-connection checks.
//! - [`single`]: the check of a stream that must carry exactly one message (`million`).
//! - `tests`: the format's round trip and each check, one rule per test.

use hdrhistogram::Histogram;

/// Appends the message body for `id` with sequence number `seq`, sent at `t_us`
/// (CLOCK_MONOTONIC microseconds).
pub(crate) fn format_body(out: &mut Vec<u8>, id: u64, seq: u64, t_us: u64) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{id}:{seq}:{t_us}");
}

/// Parses a body made by [`format_body`] into `(id, seq, t_us)`; `None` if it is not one.
pub(crate) fn parse_body(body: &[u8]) -> Option<(u64, u64, u64)> {
    let mut parts = body.split(|&b| b == b':');
    let id = parse_u64(parts.next()?)?;
    let seq = parse_u64(parts.next()?)?;
    let t_us = parse_u64(parts.next()?)?;
    match parts.next() {
        None => Some((id, seq, t_us)),
        Some(_) => None,
    }
}

/// Parses a non-empty run of ASCII digits without overflow; `None` otherwise.
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Splits a chunk `Recvd msg #N: 'MSG'<br/>\n` into `(N, MSG)`.
pub(crate) fn parse_chunk(chunk: &[u8]) -> Option<(u64, &[u8])> {
    let rest = chunk.strip_prefix(b"Recvd msg #")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let n = parse_u64(&rest[..digits])?;
    let msg = rest[digits..]
        .strip_prefix(b": '")?
        .strip_suffix(b"'<br/>\n")?;
    Some((n, msg))
}

/// Splits `Recvd msg #N from U: 'BODY'<br/>\n` into (N, U, BODY).
pub(crate) fn parse_friend_chunk(d: &[u8]) -> Option<(u64, u64, &[u8])> {
    let rest = d.strip_prefix(b"Recvd msg #")?;
    let k = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let n = parse_u64(&rest[..k])?;
    let rest = rest[k..].strip_prefix(b" from ")?;
    let k = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let from = parse_u64(&rest[..k])?;
    let body = rest[k..].strip_prefix(b": '")?.strip_suffix(b"'<br/>\n")?;
    Some((n, from, body))
}

/// A growable set of sequence numbers, one bit each.
#[derive(Debug, Default, Clone)]
pub(crate) struct Bitmap {
    words: Vec<u64>,
    ones: u64,
}

impl Bitmap {
    /// Sets bit `i`; returns false if it was already set.
    pub(crate) fn insert(&mut self, i: u64) -> bool {
        let w = (i / 64) as usize;
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let mask = 1u64 << (i % 64);
        let fresh = self.words[w] & mask == 0;
        self.words[w] |= mask;
        self.ones += u64::from(fresh);
        fresh
    }

    /// Whether bit `i` is set.
    pub(crate) fn contains(&self, i: u64) -> bool {
        self.words
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    /// Bits set.
    pub(crate) fn count(&self) -> u64 {
        self.ones
    }

    /// Sets every bit set in `other`.
    pub(crate) fn union_with(&mut self, other: &Bitmap) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w |= o;
        }
        self.ones = self.words.iter().map(|w| u64::from(w.count_ones())).sum();
    }

    /// Bits set in `self` and not in `other`.
    pub(crate) fn count_missing_from(&self, other: &Bitmap) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| (w & !other.words.get(i).copied().unwrap_or(0)).count_ones() as u64)
            .sum()
    }
}

/// Counts of what the checker saw.
#[derive(Debug, Default, Clone)]
pub(crate) struct CheckCounts {
    /// Chunks looked at.
    pub(crate) chunks: u64,
    /// Chunks in the test format that passed every check.
    pub(crate) ok: u64,
    /// Chunks whose seq had already been received.
    pub(crate) duplicates: u64,
    /// Chunks whose N was not the previous N + 1 on their connection.
    pub(crate) out_of_order: u64,
    /// Chunks whose message named another id than their connection's.
    pub(crate) id_mismatch: u64,
    /// Chunks not of the form `Recvd msg #N: '...'<br/>\n`, or (strict mode) whose message was
    /// not `{id}:{seq}:{t_us}` with a seq that was issued and a send time not in the future.
    pub(crate) garbled: u64,
    /// Lenient mode only: well-wrapped chunks whose message is not in the test format
    /// (sent by some other publisher); counted, not errors.
    pub(crate) foreign: u64,
    /// Heartbeats (a chunk holding only `\n`, which uring-comet sends on a quiet stream);
    /// neither messages nor errors, and not in `chunks`.
    pub(crate) heartbeats: u64,
}

impl CheckCounts {
    /// Chunks that are errors: duplicates, out of order, wrong id, garbled.
    pub(crate) fn errors(&self) -> u64 {
        self.duplicates + self.out_of_order + self.id_mismatch + self.garbled
    }
}

/// Most error descriptions kept for the report.
const MAX_ERROR_NOTES: usize = 5;

/// Checks every received chunk; owned by the subscriber loop.
pub(crate) struct Checker {
    /// Foreign messages are errors (main job) or merely counted (flood alone).
    strict: bool,
    /// Sequence numbers at or above this are garbled.
    seq_limit: u64,
    /// Only messages with a sequence number at least this go into `latency_us` (so that one
    /// phase of a run can be measured apart from an earlier one); 0 by default.
    pub(crate) latency_from_seq: u64,
    /// Sequence numbers received (each at most once).
    pub(crate) received: Bitmap,
    /// Publish-to-receive latency, microseconds.
    pub(crate) latency_us: Histogram<u64>,
    /// `loadtest --nodes`: the seqs published through this subscriber's own node; latency is
    /// also split into `latency_local_us` (these) and `latency_remote_us` (the others).
    pub(crate) local_seqs: Option<std::ops::Range<u64>>,
    /// Latency of messages published on the subscriber's node (with `local_seqs`), us.
    pub(crate) latency_local_us: Histogram<u64>,
    /// Latency of messages published on another node (with `local_seqs`), us.
    pub(crate) latency_remote_us: Histogram<u64>,
    /// Every connection is under one id (`loadtest flood` with a URL template without
    /// `{id}`): the message's id is not held against the connection's, and a seq seen on
    /// several connections is not a duplicate (each connection's order is still checked).
    pub(crate) one_id: bool,
    /// What was seen.
    pub(crate) counts: CheckCounts,
    /// The first few errors, described.
    pub(crate) notes: Vec<String>,
}

impl Checker {
    /// A checker; `strict` makes non-test messages errors; seqs must be below `seq_limit`.
    pub(crate) fn new(strict: bool, seq_limit: u64) -> Self {
        // 1 us to 1 hour at 3 significant digits; larger values saturate.
        let latency_us = Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .expect("constant histogram bounds are valid");
        Checker {
            strict,
            seq_limit,
            latency_from_seq: 0,
            received: Bitmap::default(),
            local_seqs: None,
            latency_local_us: latency_us.clone(),
            latency_remote_us: latency_us.clone(),
            latency_us,
            one_id: false,
            counts: CheckCounts::default(),
            notes: Vec::new(),
        }
    }

    /// Checks one chunk received at `now_us` on the connection subscribed to `conn_id`, whose
    /// previous message number is `*last_n` (0 before the first).
    pub(crate) fn check(&mut self, conn_id: u64, last_n: &mut u32, chunk: &[u8], now_us: u64) {
        self.counts.chunks += 1;
        let Some((n, msg)) =
            parse_chunk(chunk).and_then(|(n, m)| Some((u32::try_from(n).ok()?, m)))
        else {
            self.counts.garbled += 1;
            return self.note(conn_id, "garbled chunk", chunk);
        };
        let expected_n = last_n.wrapping_add(1);
        // Resynchronise so that one gap is one error, not an error per later message.
        *last_n = n;
        if n != expected_n {
            self.counts.out_of_order += 1;
            let what = format!("message #{n} where #{expected_n} was due");
            return self.note(conn_id, &what, chunk);
        }
        self.check_body(conn_id, msg, chunk, now_us);
    }

    /// Checks one message carried verbatim (no `Recvd msg #N` wrapper, so no order check), as
    /// other servers' streams carry them, received at `now_us` on connection `conn_id`.
    pub(crate) fn check_message(&mut self, conn_id: u64, msg: &[u8], now_us: u64) {
        self.counts.chunks += 1;
        self.check_body(conn_id, msg, msg, now_us);
    }

    /// Checks one message carried verbatim whose number on its stream is `n` (a cursor's
    /// offset), where `due` was expected (the previous number + 1), received at `now_us` on
    /// connection `conn_id`: the order check of [`check`](Self::check), then the body's.
    pub(crate) fn check_numbered(
        &mut self,
        conn_id: u64,
        due: u64,
        n: u64,
        msg: &[u8],
        now_us: u64,
    ) {
        if n != due {
            let what = format!("message #{n} where #{due} was due");
            return self.out_of_order(conn_id, &what, msg);
        }
        self.check_message(conn_id, msg, now_us);
    }

    /// Counts a message that arrived out of order (not checked further, not received),
    /// with `what` as its note.
    pub(crate) fn out_of_order(&mut self, conn_id: u64, what: &str, msg: &[u8]) {
        self.counts.chunks += 1;
        self.counts.out_of_order += 1;
        self.note(conn_id, what, msg);
    }

    /// The checks on a message body; `chunk` is what an error note quotes.
    fn check_body(&mut self, conn_id: u64, msg: &[u8], chunk: &[u8], now_us: u64) {
        let Some((id, seq, t_us)) = parse_body(msg) else {
            if self.strict {
                self.counts.garbled += 1;
                return self.note(conn_id, "message not in the test format", chunk);
            }
            self.counts.foreign += 1;
            return;
        };
        if seq >= self.seq_limit || t_us > now_us {
            self.counts.garbled += 1;
            return self.note(
                conn_id,
                "seq never issued or send time in the future",
                chunk,
            );
        }
        if id != conn_id && !self.one_id {
            self.counts.id_mismatch += 1;
            return self.note(conn_id, "message for another id", chunk);
        }
        if !self.received.insert(seq) && !self.one_id {
            self.counts.duplicates += 1;
            return self.note(conn_id, "duplicate message", chunk);
        }
        if seq >= self.latency_from_seq {
            let us = (now_us - t_us).max(1);
            self.latency_us.saturating_record(us);
            match &self.local_seqs {
                Some(r) if r.contains(&seq) => self.latency_local_us.saturating_record(us),
                Some(_) => self.latency_remote_us.saturating_record(us),
                None => {}
            }
        }
        self.counts.ok += 1;
    }

    /// Keeps `what` (quoting `chunk`) among the first few error notes.
    pub(crate) fn note(&mut self, conn_id: u64, what: &str, chunk: &[u8]) {
        if self.notes.len() < MAX_ERROR_NOTES {
            let shown: String = String::from_utf8_lossy(chunk).chars().take(120).collect();
            self.notes.push(format!("id {conn_id}: {what}: {shown:?}"));
        }
    }
}

pub(crate) mod room;
pub(crate) mod single;
#[cfg(test)]
mod tests;
