//! Who logs in and who publishes in `loadtest friends`: logins by neighbourhood, publishers
//! and their expected recipients, and the order of events ([`plan`], sans-IO); and the
//! job's phases 2 and 3 ([`plan_events`]): our own copy of the graph, then the plan.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};

use super::{say, FriendsArgs};
use crate::friends::journal;
use crate::friends::load::{self, LoadOptions};
use crate::friends::ShardGraph;
use crate::tools::gen_friends::SplitMix;

/// The load test's plan.
#[derive(Debug, Clone)]
pub(super) struct Plan {
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
pub(super) fn plan(
    g: &ShardGraph,
    users: &[u32],
    logins: usize,
    rng: &mut SplitMix,
) -> Result<Plan> {
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
    pub(super) fn events(&self, total: u64, rng: &mut SplitMix) -> Vec<u64> {
        let n = self.publishers.len().max(1) as u64;
        (0..total)
            .map(|_| u64::from(self.publishers[(rng.next_u64() % n) as usize]))
            .collect()
    }
}

/// The plan of a run: who logs in, who publishes to whom, and the publisher of each event.
pub(super) struct EventPlan {
    pub(super) p: Plan,
    /// The publisher (seed) of each event, by sequence number.
    pub(super) events: Arc<Vec<u64>>,
    /// `p.recipients`, shared with the subscriber threads.
    pub(super) recipients: Arc<HashMap<u32, Vec<u32>>>,
    /// Deliveries the plan holds, all events together.
    pub(super) planned: usize,
}

/// Phases 2 and 3: loads our own copy of the graph (one CSR, with the journal beside the
/// file replayed as the server does), logs in by neighbourhood and draws `total` events.
pub(super) fn plan_events(a: &FriendsArgs, path: &Path, total: u64) -> Result<EventPlan> {
    let t0 = Instant::now();
    let opts = LoadOptions {
        shards: 1,
        directed: a.graph.directed,
        strict: false,
    };
    let (mut graphs, rep) = load::load(path, opts)?;
    journal::replay(&journal::path_for(path), &mut graphs, a.graph.directed)?;
    let g = graphs.pop().ok_or_else(|| anyhow!("empty load"))?;
    say(&format!(
        "loaded our copy: {} users with friends, {} entries in {:.1} s",
        rep.users,
        rep.entries,
        t0.elapsed().as_secs_f64()
    ));
    let mut rng = SplitMix::new(a.graph.shape.seed ^ 0x5eed);
    let p = plan(&g, &g.csr.users, a.logins, &mut rng)?;
    drop(graphs);
    drop(g);
    let events = p.events(total, &mut rng);
    if p.logins.len() < a.logins {
        say(&format!(
            "--logins {} is more than the neighbourhoods hold: {} logins",
            a.logins,
            p.logins.len()
        ));
    }
    say(&format!(
        "{} logins in the neighbourhoods of {} seeds (logged-in friends per seed: median {}, max {}); {} events planned",
        p.logins.len(),
        p.publishers.len(),
        p.fan_median,
        p.fan_max,
        total
    ));
    let recipients = Arc::new(p.recipients.clone());
    let planned = events.iter().map(|&u| recipients[&(u as u32)].len()).sum();
    Ok(EventPlan {
        p,
        events: Arc::new(events),
        recipients,
        planned,
    })
}

#[cfg(test)]
mod tests {
    use super::{plan, SplitMix};
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
