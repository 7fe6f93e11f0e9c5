//! Who logs in and who publishes in `loadtest friends` (sans-IO): logins by neighbourhood,
//! publishers and their expected recipients, and the order of events.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Result};

use crate::friends::ShardGraph;
use crate::tools::gen_friends::SplitMix;

/// The load test's plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Users to log in, in connect order.
    pub logins: Vec<u32>,
    /// Publisher -> its logged-in followers (sorted): who must get its events.
    pub recipients: HashMap<u32, Vec<u32>>,
    /// The seeds with at least one logged-in follower, in the order drawn.
    pub publishers: Vec<u32>,
    /// Logged-in followers per publisher: median and largest.
    pub fan_median: usize,
    /// See `fan_median`.
    pub fan_max: usize,
}

/// Logs in up to `logins` users by neighbourhood: draw a random user with followers (a
/// seed), log in all its followers, next seed, until `logins` are in (the last
/// neighbourhood may be cut short). `users` are the graph's users with followers; `g` must
/// hold all of them (a one-shard load).
pub fn plan(g: &ShardGraph, users: &[u32], logins: usize, rng: &mut SplitMix) -> Result<Plan> {
    if users.is_empty() || logins == 0 {
        bail!("no user with friends, or no login asked for");
    }
    let (mut login, mut order, mut seeds, mut seen) =
        (HashSet::new(), Vec::new(), Vec::new(), HashSet::new());
    let mut row = Vec::new();
    let mut tries = 0;
    while order.len() < logins && tries < 20 * logins + 1000 {
        tries += 1;
        let s = users[(rng.next_u64() % users.len() as u64) as usize];
        if !seen.insert(s) {
            continue;
        }
        seeds.push(s);
        row.clear();
        g.followers(s, &mut row);
        for &f in &row {
            if order.len() == logins {
                break;
            }
            if login.insert(f) {
                order.push(f);
            }
        }
    }
    let mut recipients = HashMap::new();
    let mut publishers = Vec::new();
    for &s in &seeds {
        row.clear();
        g.followers(s, &mut row);
        let mut r: Vec<u32> = row.iter().copied().filter(|f| login.contains(f)).collect();
        r.sort_unstable();
        if !r.is_empty() {
            recipients.insert(s, r);
            publishers.push(s);
        }
    }
    let mut fan: Vec<usize> = publishers.iter().map(|p| recipients[p].len()).collect();
    fan.sort_unstable();
    Ok(Plan {
        fan_max: fan.last().copied().unwrap_or(0),
        fan_median: fan.get(fan.len() / 2).copied().unwrap_or(0),
        logins: order,
        recipients,
        publishers,
    })
}

impl Plan {
    /// The publisher of each of `total` events, drawn uniformly from the publishers.
    pub fn events(&self, total: u64, rng: &mut SplitMix) -> Vec<u64> {
        let n = self.publishers.len().max(1) as u64;
        (0..total)
            .map(|_| u64::from(self.publishers[(rng.next_u64() % n) as usize]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::friends::load::{load_from, LoadOptions};

    #[test]
    fn neighbourhoods() {
        // A star around 1 (friends 2..=9) and a pair 20-21.
        let mut text = String::new();
        for f in 2..=9 {
            text.push_str(&format!("1 {f}\n"));
        }
        text.push_str("20 21\n");
        let opts = LoadOptions {
            shards: 1,
            directed: false,
            strict: false,
        };
        let (gs, _) = load_from(text.as_bytes(), std::path::Path::new("t"), opts).unwrap();
        let g = &gs[0];
        let users = g.csr.users.clone();
        let mut rng = SplitMix::new(3);
        let p = plan(g, &users, 100, &mut rng).unwrap();
        // Every user with friends is drawn at last: everyone is logged in.
        let mut all = p.logins.clone();
        all.sort_unstable();
        assert_eq!(all, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 21]);
        assert_eq!(p.recipients[&1], vec![2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(p.recipients[&2], vec![1]);
        assert_eq!(p.fan_max, 8);
        // A cut at 3 logins: each is a follower of a publisher, and expected there.
        let p = plan(g, &users, 3, &mut SplitMix::new(3)).unwrap();
        assert_eq!(p.logins.len(), 3);
        for u in &p.logins {
            assert!(p
                .publishers
                .iter()
                .any(|s| g.has(*s, *u) && p.recipients[s].contains(u)));
        }
        let ev = p.events(50, &mut rng);
        assert!(ev.iter().all(|e| p.recipients.contains_key(&(*e as u32))));
    }
}
