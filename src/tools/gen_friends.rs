//! `uring-comet gen-friends`: a synthetic social graph in SNAP format, deterministic for a
//! seed.
//!
//! Model: Chung-Lu (Chung and Lu 2002) with a power-law weight sequence,
//! `w_i ∝ (i + 1)^(-1/(γ-1))` (γ = `--exponent`, 2.5 by default), scaled to mean
//! `--avg-friends` and capped at `--max-degree` (default √(users · avg), the largest weight for
//! which Chung-Lu's edge probabilities stay below 1). Weights are dealt to ids in a seeded
//! random order, so an id says nothing about its degree. Each edge picks its first end with
//! probability ∝ weight; its second end likewise either from all users or, with probability
//! `--local` (0.3), from the first end's community (the block of `--community` consecutive
//! ids it is in), which closes triangles: friends of friends are often friends. Self-loops
//! and repeats are dropped and edges drawn again until the target count `users · avg / 2`
//! is reached. Output: `u<TAB>v` lines, u < v, sorted; `#` header lines. The file is written
//! under a temporary name beside it and renamed into place when complete ([`write_whole`]).
//!
//! Tests (`tests`): determinism, the degree distribution, the file written whole or not at all.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

/// The shape of a generated graph: its users, their mean friends, the seed. Flattened into
/// `gen-friends` and into `loadtest friends`, which generates its graph the same way.
#[derive(Args, Debug, Clone, Copy)]
pub struct GraphShape {
    /// Users, ids 1..=users.
    #[arg(long, default_value_t = 1_000_000)]
    pub users: u32,
    /// Mean friends per user (each friendship counts for both ends).
    #[arg(long, default_value_t = 50.0)]
    pub avg_friends: f64,
    /// Seed of the PRNG: the same flags and seed give the same file, byte for byte.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Flags of `uring-comet gen-friends`.
#[derive(Args, Debug, Clone)]
pub struct GenArgs {
    /// Users, mean friends, seed.
    #[command(flatten)]
    pub shape: GraphShape,
    /// Power-law exponent γ of the degree distribution (> 2).
    #[arg(long, default_value_t = 2.5)]
    pub exponent: f64,
    /// Largest expected degree; default √(users · avg-friends).
    #[arg(long)]
    pub max_degree: Option<f64>,
    /// Fraction of edges whose second end is drawn from the first end's community.
    #[arg(long, default_value_t = 0.3)]
    pub local: f64,
    /// Consecutive ids per community.
    #[arg(long, default_value_t = 256)]
    pub community: u32,
    /// Output file (SNAP edge list).
    #[arg(short = 'o', long)]
    pub output: PathBuf,
}

/// SplitMix64 (Steele et al. 2014): small, fast, and the same on every platform.
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Degree statistics of a graph.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DegreeStats {
    /// Mean degree over all users.
    pub mean: f64,
    /// Median degree.
    pub median: u32,
    /// 99th percentile.
    pub p99: u32,
    /// Largest degree.
    pub max: u32,
    /// Users with no friend.
    pub isolated: u32,
}

impl DegreeStats {
    /// Statistics of a degree sequence.
    pub fn of(mut deg: Vec<u32>) -> DegreeStats {
        if deg.is_empty() {
            return DegreeStats::default();
        }
        let mean = deg.iter().map(|&d| f64::from(d)).sum::<f64>() / deg.len() as f64;
        let isolated = deg.iter().filter(|&&d| d == 0).count() as u32;
        deg.sort_unstable();
        let at = |q: f64| deg[((deg.len() - 1) as f64 * q).round() as usize];
        DegreeStats {
            mean,
            median: at(0.5),
            p99: at(0.99),
            max: deg[deg.len() - 1],
            isolated,
        }
    }
}

/// Generates the graph: sorted, unique edges `u << 32 | v` with 1 <= u < v <= users.
pub fn generate(a: &GenArgs) -> Result<Vec<u64>> {
    if a.shape.users < 2 || a.shape.avg_friends <= 0.0 || a.exponent <= 2.0 || a.community == 0 {
        bail!("need --users >= 2, --avg-friends > 0, --exponent > 2, --community >= 1");
    }
    let n = a.shape.users as usize;
    let target = (n as f64 * a.shape.avg_friends / 2.0).round() as usize;
    if target as f64 > n as f64 * (n as f64 - 1.0) / 4.0 {
        bail!(
            "--avg-friends {} is too dense for {} users",
            a.shape.avg_friends,
            n
        );
    }
    let mut rng = SplitMix::new(a.shape.seed);
    // Power-law weights by rank, scaled to the mean and capped (a few rounds, since the cap
    // lowers the mean).
    let cap = a
        .max_degree
        .unwrap_or((n as f64 * a.shape.avg_friends).sqrt());
    let alpha = 1.0 / (a.exponent - 1.0);
    let mut w: Vec<f64> = (0..n).map(|i| ((i + 1) as f64).powf(-alpha)).collect();
    for _ in 0..4 {
        let mean = w.iter().sum::<f64>() / n as f64;
        let k = a.shape.avg_friends / mean;
        w.iter_mut().for_each(|x| *x = (*x * k).min(cap));
    }
    // Deal the weights to ids in a random order (Fisher-Yates), then cumulate by id.
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        w.swap(i, j);
    }
    let mut cum = Vec::with_capacity(n + 1);
    cum.push(0.0f64);
    let mut s = 0.0;
    for &x in &w {
        s += x;
        cum.push(s);
    }
    drop(w);
    // Index of the user whose cumulative range holds x, within ids [lo, hi).
    let pick = |rng: &mut SplitMix, lo: usize, hi: usize| -> usize {
        let x = cum[lo] + rng.unit() * (cum[hi] - cum[lo]);
        let at = cum[lo..=hi].partition_point(|&c| c <= x);
        (lo + at.max(1) - 1).min(hi - 1)
    };
    let block = a.community as usize;
    let mut edges: Vec<u64> = Vec::with_capacity(target + target / 16);
    while edges.len() < target {
        let want = (target - edges.len()) + (target - edges.len()) / 32 + 16;
        for _ in 0..want {
            let u = pick(&mut rng, 0, n);
            let v = if rng.unit() < a.local {
                let lo = u / block * block;
                pick(&mut rng, lo, (lo + block).min(n))
            } else {
                pick(&mut rng, 0, n)
            };
            if u != v {
                let (x, y) = (u.min(v) as u64 + 1, u.max(v) as u64 + 1);
                edges.push(x << 32 | y);
            }
        }
        edges.sort_unstable();
        edges.dedup();
    }
    Ok(edges)
}

/// Degrees of users 1..=users (index = id - 1).
pub fn degrees(edges: &[u64], users: u32) -> Vec<u32> {
    let mut deg = vec![0u32; users as usize];
    for &e in edges {
        deg[(e >> 32) as usize - 1] += 1;
        deg[(e as u32) as usize - 1] += 1;
    }
    deg
}

/// Runs `uring-comet gen-friends`: generates, writes the file, prints degree statistics.
pub fn run(a: GenArgs) -> Result<()> {
    let t0 = Instant::now();
    let (edges, stats, gen_s) = write(&a)?;
    println!(
        "gen-friends: {} users, {} friendships ({} adjacency entries) -> {} in {:.1} s (generate {:.1} s)",
        a.shape.users,
        edges,
        2 * edges,
        a.output.display(),
        t0.elapsed().as_secs_f64(),
        gen_s
    );
    println!(
        "degree: mean {:.2}, median {}, p99 {}, max {}, users without friends {}",
        stats.mean, stats.median, stats.p99, stats.max, stats.isolated
    );
    Ok(())
}

/// Generates the graph and writes it to `a.output`; returns the friendships written, the
/// degree statistics and the seconds spent generating.
///
/// The file appears complete or not at all (see [`write_whole`]): a run interrupted while
/// writing (Ctrl-C, a full disk) leaves no cut-off graph under `a.output` for a later run to
/// take as finished. Errors: bad flags (see [`generate`]), the file cannot be written.
pub fn write(a: &GenArgs) -> Result<(usize, DegreeStats, f64)> {
    let t0 = Instant::now();
    let edges = generate(a)?;
    let gen_s = t0.elapsed().as_secs_f64();
    let stats = DegreeStats::of(degrees(&edges, a.shape.users));
    write_whole(&a.output, |w| {
        writeln!(
            w,
            "# Undirected graph: uring-comet gen-friends --users {} --avg-friends {} --seed {} --exponent {} --local {} --community {}",
            a.shape.users, a.shape.avg_friends, a.shape.seed, a.exponent, a.local, a.community
        )?;
        writeln!(w, "# Nodes: {} Edges: {}", a.shape.users, edges.len())?;
        writeln!(w, "# FromNodeId\tToNodeId")?;
        let mut line = Vec::with_capacity(24);
        let mut ib = itoa::Buffer::new();
        for &e in &edges {
            line.clear();
            line.extend_from_slice(ib.format(e >> 32).as_bytes());
            line.push(b'\t');
            line.extend_from_slice(ib.format(e as u32).as_bytes());
            line.push(b'\n');
            w.write_all(&line)?;
        }
        Ok(())
    })?;
    Ok((edges.len(), stats, gen_s))
}

/// The temporary name `out` is written under by process `pid`: `<out>.tmp-<pid>`, in the
/// same directory (so the rename into place stays within one file system).
pub fn temp_name(out: &Path, pid: u32) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(format!(".tmp-{pid}"));
    PathBuf::from(p)
}

/// Writes the file `out` with `fill`, whole or not at all: to [`temp_name`] beside it, then
/// flushed, fsynced, renamed over `out` and the directory fsynced. Until the rename `out`
/// does not exist (or keeps its earlier content); if `fill` or a write fails, the temporary
/// file is removed. Leftovers of earlier runs for the same `out` whose process is gone (a
/// Ctrl-C or a kill, where nothing could clean up) are removed first. A symbolic link `out`
/// is followed (its target is replaced); an `out` that exists and is not a regular file
/// (`/dev/null`, a pipe) is written directly, as it cannot be replaced. Errors: the file or
/// its temporary cannot be created, written, synced or renamed (naming it), or `fill`'s.
pub fn write_whole(
    out: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<()> {
    let target = match std::fs::symlink_metadata(out) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(out)
            .with_context(|| format!("resolving the link {}", out.display()))?,
        _ => out.to_path_buf(),
    };
    let direct = std::fs::metadata(&target).is_ok_and(|m| !m.is_file());
    if direct {
        let f = OpenOptions::new()
            .write(true)
            .open(&target)
            .with_context(|| format!("opening {}", target.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        fill(&mut w)
            .and_then(|()| w.flush())
            .with_context(|| format!("writing {}", target.display()))?;
        return Ok(());
    }
    remove_stale_temps(&target);
    let tmp = temp_name(&target, std::process::id());
    let written = (|| -> Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let ctx = || format!("writing {}", tmp.display());
        fill(&mut w).with_context(ctx)?;
        let f = w
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(ctx)?;
        f.sync_all().with_context(ctx)?;
        drop(f);
        std::fs::rename(&tmp, &target)
            .with_context(|| format!("renaming {} to {}", tmp.display(), target.display()))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable once the directory is; a failure here leaves a whole file.
    if let Err(e) = File::open(dir_of(&target)).and_then(|d| d.sync_all()) {
        tracing::warn!("fsync of the directory of {}: {e}", target.display());
    }
    Ok(())
}

/// The directory of `path` (`.` for a bare file name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Removes `<out>.tmp-<pid>` files whose process no longer runs (best effort, logged).
fn remove_stale_temps(out: &Path) {
    let Some(name) = out.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let prefix = format!("{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir_of(out)) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    tracing::info!("removed {}, left by an interrupted run", e.path().display())
                }
                Err(err) => tracing::warn!("removing {}: {err}", e.path().display()),
            }
        }
    }
}

#[cfg(test)]
mod tests;
