//! Redis Cluster: the periodic slot check. A slot can change owner without the node being
//! told: a failover behind a partition (the old master alive, holding our subscription,
//! receiving nothing), or a move whose `sunsubscribe` was lost with a connection. So every
//! [`CHECK_EVERY`] the agent reads `CLUSTER SLOTS` and compares each subscribed bucket's
//! master with the last reading: a bucket whose master changed is subscribed again (the
//! client routes it to the new master) and filled from its backlog ([`super::backlog`]),
//! as after a `sunsubscribe`. The first reading of a session only records. In affine mode
//! (on one Redis too) the same timer refreshes the node list's lease ([`super::affine_lease`]).

use std::time::{Duration, Instant};

use redis::Value;

use super::conn::{self, Conn, Sub};
use super::Cluster;

/// How often the slot map is read.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The masters of the subscribed buckets as last read (`None` on one Redis: no checks).
pub(super) struct SlotWatch {
    /// Per bucket (the friends channel last), its master's `host:port`.
    owners: Option<Vec<Option<String>>>,
    /// Affine mode: the node list's lease is refreshed at each check.
    affine: bool,
    next: Instant,
}

impl SlotWatch {
    pub(super) fn new(c: &Cluster) -> SlotWatch {
        let n = c.config().buckets as usize + 1;
        SlotWatch {
            owners: c.config().is_redis_cluster().then(|| vec![None; n]),
            affine: c.config().affine.is_some(),
            next: Instant::now() + CHECK_EVERY,
        }
    }

    /// Resolves when a check is due (never on one Redis in broadcast mode).
    pub(super) async fn due(&self) {
        match (&self.owners, self.affine) {
            (None, false) => std::future::pending().await,
            _ => tokio::time::sleep_until(self.next.into()).await,
        }
    }

    /// Reads the slot map; subscribes again (and queues for a fill) every subscribed bucket
    /// whose master changed since the last reading. Errors end the session.
    pub(super) async fn check(
        &mut self,
        c: &Cluster,
        publ: &mut Conn,
        sink: &mut Sub,
    ) -> Result<(), String> {
        self.next = Instant::now() + CHECK_EVERY;
        // Affine mode: the node list's lease, refreshed (affine_lease.rs).
        super::affine_lease::claim(c, publ).await?;
        let Some(owners) = self.owners.as_mut() else {
            return Ok(());
        };
        let map: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(publ)
            .await
            .map_err(|e| format!("CLUSTER SLOTS: {e}"))?;
        let ranges = parse_slots(&map);
        let mut moved = Vec::new();
        for (b, owner) in owners.iter_mut().enumerate() {
            let b = b as u32;
            if !c.is_subscribed(b) {
                continue;
            }
            let ch = c.channel(b);
            let slot = slot_of(ch.as_bytes());
            let now = ranges
                .iter()
                .find(|r| (r.0..=r.1).contains(&slot))
                .map(|r| r.2.clone());
            if owner.is_some() && now.is_some() && *owner != now {
                tracing::info!(bucket = b, from = ?owner, to = ?now, "cluster: a bucket's master changed (slot check)");
                moved.push(ch.into_bytes());
                c.refill.push(b);
            }
            *owner = now;
        }
        conn::resubscribe(c, sink, moved).await
    }
}

/// `CLUSTER SLOTS` as (first slot, last slot, master `host:port`).
fn parse_slots(v: &Value) -> Vec<(u16, u16, String)> {
    let Value::Array(rows) = v else {
        return Vec::new();
    };
    let int = |v: &Value| match v {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let mut out = Vec::new();
    for row in rows {
        let Value::Array(f) = row else { continue };
        let (Some(a), Some(b), Some(Value::Array(m))) =
            (f.first().and_then(int), f.get(1).and_then(int), f.get(2))
        else {
            continue;
        };
        if let (Some(host), Some(Value::Int(port))) = (m.first().and_then(text), m.get(1)) {
            out.push((a, b, format!("{host}:{port}")));
        }
    }
    out
}

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the text between
/// the first `{` and the next `}`, if not empty) or of the whole key, mod 16384 (Redis
/// Cluster specification, "Keys distribution model").
pub fn slot_of(key: &[u8]) -> u16 {
    let tag = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|s| {
            let e = key[s + 1..].iter().position(|&b| b == b'}')?;
            (e > 0).then(|| &key[s + 1..s + 1 + e])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &b in tag {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::{parse_slots, slot_of};

    #[test]
    fn slots_as_redis_computes_them() {
        // Redis Cluster specification's example, and `CLUSTER KEYSLOT` answers.
        assert_eq!(slot_of(b"123456789"), 0x31C3);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_ne!(
            slot_of(b"foo{}{bar}"),
            slot_of(b"bar"),
            "an empty tag hashes the whole key"
        );
        assert_eq!(slot_of(b"uc:1024:{5}"), slot_of(b"5"));
        let map = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(5460),
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(7000),
            ]),
        ])]);
        assert_eq!(parse_slots(&map), [(0, 5460, "127.0.0.1:7000".to_string())]);
    }
}
