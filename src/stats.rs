//! Per-shard counters. Each shard writes only its own [`ShardStats`] (relaxed atomics, no
//! lock, no shared cache line written by two cores); `GET /stats` reads them all.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of one shard. Gauges go up and down; totals only up.
#[derive(Default)]
#[repr(align(128))]
pub struct ShardStats {
    /// Gauge: open subscriber connections.
    pub subscribers: AtomicU64,
    /// Gauge: open publisher connections.
    pub publishers: AtomicU64,
    /// Gauge: ids owned by this shard with at least one connection somewhere.
    pub ids: AtomicU64,
    /// Total: publishes accepted on this shard (`POST /send`).
    pub sent: AtomicU64,
    /// Total: messages queued to subscriber connections of this shard.
    pub delivered: AtomicU64,
    /// Total: subscribers disconnected for exceeding `--max-pending-bytes`.
    pub slow_closed: AtomicU64,
    /// Total: accepted sockets closed at once because the shard was at `--max-conns`.
    pub rejected: AtomicU64,
    /// Total: times the multishot accept ended and was re-armed.
    pub accept_rearmed: AtomicU64,
    /// Total: subscribers whose send failed with ETIMEDOUT: data unacknowledged for
    /// `--send-timeout` (a vanished peer, or a reader stalled at a zero window).
    pub send_timeouts: AtomicU64,
    /// Gauge: io_uring direct-descriptor slots in use (fixed-file table entries), updated
    /// once per turn of the shard's loop; 0 on the epoll backend.
    pub slots: AtomicU64,
    /// Total: friends publishes fanned out by this shard (as the publishing user's owner).
    pub friend_events: AtomicU64,
    /// Friends store: users with followers held by this shard (set once at start).
    pub graph_users: AtomicU64,
    /// Friends store: adjacency entries held by this shard (set once at start).
    pub graph_entries: AtomicU64,
    /// Friends store: heap bytes of this shard's CSR arrays (set once at start).
    pub graph_heap_bytes: AtomicU64,
    /// Friends store, whole process (shard 0 only): RSS grown by the load, bytes.
    pub graph_rss_bytes: AtomicU64,
    /// Friends store, whole process (shard 0 only): load time including the journal, us.
    pub graph_load_us: AtomicU64,
    /// History gauge: ids with held messages (owned by this shard).
    pub history_ids: AtomicU64,
    /// History gauge: messages held.
    pub history_messages: AtomicU64,
    /// History gauge: bytes counted against `--history-memory` (payloads and overheads).
    pub history_bytes: AtomicU64,
    /// History total: messages evicted by the memory cap (not by count or TTL).
    pub history_evicted: AtomicU64,
    /// Total: connections that gave a cursor and got every id back (`Comet-Recovered: true`).
    pub recoveries: AtomicU64,
    /// Total: connections that gave a cursor and lost some id's position (a reset verdict).
    pub recoveries_failed: AtomicU64,
    /// Gauge: logged-in subscriber connections per transport, indexed by
    /// [`crate::http::stream::Proto`] as `u8` (seed, raw, SSE, WebSocket, poll).
    pub streams: [AtomicU64; 5],
    /// Gauge, 0 or 1: this shard's accepts are armed (0 while paused after an accept error,
    /// and once stopping or draining). Read by `GET /readyz`.
    pub accepting: AtomicU64,
    /// Total: accepts that failed (EMFILE, ENFILE, ENOMEM, ENOBUFS).
    pub accept_errors: AtomicU64,
    /// Total: connections answered 408 by the head-timeout sweep (`--head-timeout`).
    pub head_timeouts: AtomicU64,
    /// Total: bytes the kernel took from this shard's sends (subscribers and publishers).
    pub bytes_sent: AtomicU64,
    /// Histogram: a message's queueing on its subscriber to the completion of the send
    /// that carried it (see [`crate::metrics::Latency`]).
    pub publish_to_send: crate::metrics::Latency,
    /// Total: zero-copy sends of shared frames submitted (`--zerocopy-min-bytes`).
    pub zerocopy_sends: AtomicU64,
    /// Total: connections ended by `DELETE /subscribers/<id>` (kick) on this shard.
    pub kicked: AtomicU64,
    /// Total: subscriber connections answered 429 at `--max-conns-per-ip`.
    pub per_ip_refused: AtomicU64,
    /// Gauge: subscriber connections of this shard counted under `--max-conns-per-ip`
    /// (0 with the limit off).
    pub per_ip_conns: AtomicU64,
    /// Total: presence `online` events numbered (counted on shard 0 only, once per event).
    pub presence_online: AtomicU64,
    /// Total: presence `offline` events numbered (shard 0 only).
    pub presence_offline: AtomicU64,
    /// Gauge: `GET /events/presence` feeds open on this shard.
    pub presence_feeds: AtomicU64,
    /// Total: feeds closed for not reading (over 1 MiB of unsent events).
    pub presence_feeds_cut: AtomicU64,
    /// Total: presence count requests answered (`/presence/<id>`, `POST /presence`).
    pub presence_requests: AtomicU64,
}

impl ShardStats {
    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
    /// Subtracts `n` from a gauge.
    pub fn sub(c: &AtomicU64, n: u64) {
        c.fetch_sub(n, Relaxed);
    }
    /// Adds `n` to a counter only this shard writes: a plain load and store, no locked
    /// read-modify-write (a reader sees the old or the new value, never a torn one).
    #[inline]
    pub fn bump(c: &AtomicU64, n: u64) {
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    }
}

/// Resident set size of this process in bytes, from `/proc/self/statm` (0 if unreadable).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    pages * page
}

/// The `GET /stats` body: one JSON object.
///
/// Keys: `connections` (open subscribers, all shards), `connections_per_shard` (array),
/// `publishers`, `ids` (distinct ids logged in), `messages_sent`, `messages_delivered`,
/// `slow_consumers_closed`, `rejected_at_capacity`, `accept_rearmed`, `send_timeouts`
/// (subscribers closed by the send deadline), `direct_slots_in_use` (io_uring fixed-file
/// table entries held, all shards), `rss_bytes`; friends: `friend_events`, `graph_users`,
/// `graph_entries` (directed adjacency entries), `graph_heap_bytes`, `graph_rss_bytes` (RSS
/// grown by the load), `graph_load_us`; `zerocopy_sends` (zero-copy sends of shared frames);
/// `kicked` (connections ended by `DELETE /subscribers/<id>`), `per_ip_refused` (429s at
/// `--max-conns-per-ip`), `per_ip_conns` (subscribers counted under it now);
/// `presence_events_online`, `presence_events_offline` (events numbered), `presence_feeds`
/// (open now), `presence_feeds_cut` (closed for not reading), `presence_requests` (count
/// requests answered).
pub fn json(shards: &[ShardStats]) -> String {
    let sum =
        |f: fn(&ShardStats) -> &AtomicU64| shards.iter().map(|s| f(s).load(Relaxed)).sum::<u64>();
    let per: Vec<String> = shards
        .iter()
        .map(|s| s.subscribers.load(Relaxed).to_string())
        .collect();
    let mut out = String::with_capacity(256);
    let _ = write!(
        out,
        "{{\"connections\":{},\"connections_per_shard\":[{}],\"publishers\":{},\"ids\":{},\"messages_sent\":{},\"messages_delivered\":{},\"slow_consumers_closed\":{},\"rejected_at_capacity\":{},\"accept_rearmed\":{},\"send_timeouts\":{},\"direct_slots_in_use\":{},\"rss_bytes\":{},\"friend_events\":{},\"graph_users\":{},\"graph_entries\":{},\"graph_heap_bytes\":{},\"graph_rss_bytes\":{},\"graph_load_us\":{},\"history_ids\":{},\"history_messages\":{},\"history_bytes\":{},\"history_evicted\":{},\"recoveries\":{},\"recoveries_failed\":{}}}",
        sum(|s| &s.subscribers),
        per.join(","),
        sum(|s| &s.publishers),
        sum(|s| &s.ids),
        sum(|s| &s.sent),
        sum(|s| &s.delivered),
        sum(|s| &s.slow_closed),
        sum(|s| &s.rejected),
        sum(|s| &s.accept_rearmed),
        sum(|s| &s.send_timeouts),
        sum(|s| &s.slots),
        rss_bytes(),
        sum(|s| &s.friend_events),
        sum(|s| &s.graph_users),
        sum(|s| &s.graph_entries),
        sum(|s| &s.graph_heap_bytes),
        sum(|s| &s.graph_rss_bytes),
        sum(|s| &s.graph_load_us),
        sum(|s| &s.history_ids),
        sum(|s| &s.history_messages),
        sum(|s| &s.history_bytes),
        sum(|s| &s.history_evicted),
        sum(|s| &s.recoveries),
        sum(|s| &s.recoveries_failed),
    );
    // Appended keys (after the object's first fields, which keep their order).
    out.pop();
    let _ = write!(out, ",\"zerocopy_sends\":{}}}", sum(|s| &s.zerocopy_sends));
    out.pop();
    let _ = write!(out, ",\"kicked\":{}}}", sum(|s| &s.kicked));
    out.pop();
    let _ = write!(
        out,
        ",\"per_ip_refused\":{},\"per_ip_conns\":{}}}",
        sum(|s| &s.per_ip_refused),
        sum(|s| &s.per_ip_conns)
    );
    out.pop();
    let _ = write!(
        out,
        ",\"presence_events_online\":{},\"presence_events_offline\":{},\"presence_feeds\":{},\"presence_feeds_cut\":{},\"presence_requests\":{}}}",
        sum(|s| &s.presence_online),
        sum(|s| &s.presence_offline),
        sum(|s| &s.presence_feeds),
        sum(|s| &s.presence_feeds_cut),
        sum(|s| &s.presence_requests)
    );
    out
}
