//! Presence settings (README: Presence): who is online, counted by the router, and the
//! online/offline events of `GET /events/presence` and `--friends-presence`.
//!
//! Counts are always on and cost nothing: a shard's connections under an id are the
//! router's subscriber list. Events are off by default (as Centrifugo's `join_leave`): with
//! them on, an id's owner reports its first connection at once and its last close once the
//! id has stayed without a connection for `--presence-debounce`.

use std::sync::OnceLock;
use std::time::Duration;

use clap::Args;

/// `serve` flags for presence. Each doc line is its `--help`.
#[derive(Args, Debug, Clone)]
pub struct PresenceArgs {
    /// Online/offline events: `GET /events/presence` on the publish listener streams `event:
    /// online` when an id gets its first connection and `event: offline` when its last one
    /// closes (SSE, resumable by `Last-Event-ID`). Off by default.
    #[arg(long)]
    pub presence_events: bool,
    /// An id whose last connection closed is reported offline only after this long with no
    /// connection; one back within it produces no event at all (`2s`; `0` reports at once).
    #[arg(long, default_value = "2s", value_parser = crate::duration::parse_duration)]
    pub presence_debounce: Duration,
    /// Presence events each shard keeps for a `/events/presence` client that resumes with
    /// `Last-Event-ID` (about 40 bytes each, only with events on).
    #[arg(long, default_value_t = 65_536, value_name = "EVENTS")]
    pub presence_log: usize,
    /// With --friends: a user's online/offline change also goes to its logged-in friends'
    /// streams, as an SSE `event: presence` (`{"from":"<user>","online":true|false}`).
    #[arg(long, requires = "friends")]
    pub friends_presence: bool,
}

/// Presence as the shards use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceConfig {
    /// `--presence-events`.
    pub events: bool,
    /// `--presence-debounce`, ms.
    pub debounce_ms: u32,
    /// `--presence-log`, events per shard.
    pub log: usize,
    /// `--friends-presence`.
    pub friends: bool,
}

impl Default for PresenceConfig {
    /// Events off, a 2 s debounce, 65,536 events kept.
    fn default() -> PresenceConfig {
        PresenceConfig {
            events: false,
            debounce_ms: 2_000,
            log: 65_536,
            friends: false,
        }
    }
}

impl PresenceConfig {
    /// Whether the router must report online/offline edges (events or friends presence).
    pub fn edges(&self) -> bool {
        self.events || self.friends
    }
}

impl From<&PresenceArgs> for PresenceConfig {
    fn from(a: &PresenceArgs) -> PresenceConfig {
        PresenceConfig {
            events: a.presence_events,
            debounce_ms: u32::try_from(a.presence_debounce.as_millis()).unwrap_or(u32::MAX),
            log: a.presence_log.max(1),
            friends: a.friends_presence,
        }
    }
}

/// The epoch of this process's presence events (16 hex digits in a cursor, never 0): new at
/// every start, so a cursor from an earlier process is recognised as such and answered with
/// `event: reset`.
pub fn epoch() -> u64 {
    static EPOCH: OnceLock<u64> = OnceLock::new();
    *EPOCH.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        (t ^ (u64::from(std::process::id()) << 40)) | 1
    })
}
