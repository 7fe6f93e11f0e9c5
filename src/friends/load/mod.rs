//! Loading a SNAP edge list into per-shard CSR arrays, streamed.
//!
//! Format (SNAP, e.g. `soc-LiveJournal1.txt`): one edge per line, two decimal ids separated
//! by tabs or spaces (`u<TAB>v` or `u v`), optional trailing whitespace and CR; empty lines
//! and lines starting with `#` are skipped. Ids are 0 to 4,294,967,295 (u32). A self-loop
//! is skipped (counted); a repeated edge (also `u v` and `v u` in an undirected file) is
//! stored once. Any other line is bad: it is reported with its line number and skipped, or
//! it stops the load with `--strict`.
//!
//! # How
//! One pass over the file in 8 MiB reads with a hand-rolled byte parser. Each edge becomes
//! one or two (user, follower) entries packed in a `u64` (user in the high half) and goes to
//! the buffer of the shard that owns the user. Then each shard's buffer is sorted,
//! de-duplicated and turned into a [`Csr`] on a thread of its own (in parallel), and freed.
//! Peak memory is 8 bytes per entry for the buffers plus the CSR being built; what stays is
//! the CSR: 4 bytes per entry plus 8 per user.
//!
//! # Files
//! - this file: the format, the streamed read, and the split of edges over shards.
//! - `build`: sorting each shard's entries and building its CSR, in parallel.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{owner_of, Csr, ShardGraph};

mod build;

use build::build_all;

/// Bytes per read of the edge file.
const READ_SIZE: usize = 8 << 20;
/// Bad lines logged one by one; the rest are counted.
const MAX_LOGGED: u64 = 10;

/// How to load.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Shards to partition the store over.
    pub shards: usize,
    /// `u v` means u follows v only (else: a friendship both ways).
    pub directed: bool,
    /// Stop at the first bad line instead of skipping it.
    pub strict: bool,
}

/// What a load did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Lines read.
    pub lines: u64,
    /// Edge lines accepted (self-loops excluded).
    pub edges: u64,
    /// Bad lines skipped.
    pub bad_lines: u64,
    /// The first bad line's number (1-based), 0 if none.
    pub first_bad_line: u64,
    /// Self-loops skipped.
    pub self_loops: u64,
    /// Entries dropped as repeats.
    pub duplicates: u64,
    /// Users with at least one follower.
    pub users: u64,
    /// Stored (directed) entries, all shards.
    pub entries: u64,
    /// Heap bytes of the CSR arrays, all shards.
    pub heap_bytes: u64,
    /// Wall time of the load.
    pub elapsed: Duration,
}

/// Why a load failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A bad line under `--strict`.
    #[error("{path}:{line}: {why}: {text:?} (--strict stops at the first bad line)")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// Line number, 1-based.
        line: u64,
        /// What is wrong.
        why: &'static str,
        /// The line, cut to 80 bytes.
        text: String,
    },
    /// A shard would hold more than 2^32 - 1 entries (its row offsets are u32).
    #[error("one shard would hold more than 4,294,967,295 entries; run more --shards")]
    TooLarge,
}

/// Parses one line: `Ok(None)` for a comment or blank line, `Ok(Some((u, v)))` for an edge.
pub fn parse_line(line: &[u8]) -> Result<Option<(u32, u32)>, &'static str> {
    let mut i = 0;
    let ws = |b: u8| b == b' ' || b == b'\t' || b == b'\r';
    while i < line.len() && ws(line[i]) {
        i += 1;
    }
    if i == line.len() || line[i] == b'#' {
        return Ok(None);
    }
    let (u, n) = number(&line[i..])?;
    i += n;
    let sep = i;
    while i < line.len() && (line[i] == b' ' || line[i] == b'\t') {
        i += 1;
    }
    if i == sep || i == line.len() {
        return Err("expected two ids");
    }
    let (v, n) = number(&line[i..])?;
    i += n;
    if line[i..].iter().all(|&b| ws(b)) {
        Ok(Some((u, v)))
    } else {
        Err("expected two ids")
    }
}

/// A decimal u32 at the start of `s` and its length in bytes.
fn number(s: &[u8]) -> Result<(u32, usize), &'static str> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Err("expected a decimal id");
    }
    if digits > 10 {
        return Err("id over 4294967295");
    }
    let n = s[..digits]
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    u32::try_from(n)
        .map(|n| (n, digits))
        .map_err(|_| "id over 4294967295")
}

/// Loads the edge list at `path`. A file that does not exist is an empty graph (the
/// journal's edits then build it up), logged.
pub fn load(path: &Path, opts: LoadOptions) -> Result<(Vec<ShardGraph>, LoadReport), LoadError> {
    let io_err = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    match File::open(path) {
        Ok(f) => load_from(f, path, opts),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(
                "friends: {} does not exist; starting with an empty graph (edits go to its journal)",
                path.display()
            );
            let graphs = (0..opts.shards.max(1)).map(|_| empty()).collect();
            Ok((graphs, LoadReport::default()))
        }
        Err(e) => Err(io_err(e)),
    }
}

fn empty() -> ShardGraph {
    ShardGraph::new(Csr {
        offsets: vec![0],
        ..Csr::default()
    })
}

/// Loads an edge list from `r` (`path` names it in messages): reads it in `READ_SIZE`
/// chunks, sends each edge's entries to their shards' buffers, then builds each shard's CSR.
/// Errors: a read failed; a bad line under `--strict`; a shard over 2^32 entries.
pub fn load_from(
    mut r: impl Read,
    path: &Path,
    opts: LoadOptions,
) -> Result<(Vec<ShardGraph>, LoadReport), LoadError> {
    let t0 = Instant::now();
    let mut split = Split::new(opts);
    read_lines(&mut r, path, |line| split.line(line, path))?;
    let Split { bufs, mut rep, .. } = split;
    if rep.bad_lines > MAX_LOGGED {
        tracing::warn!(
            "friends: {}: {} bad lines skipped in all (first at line {})",
            path.display(),
            rep.bad_lines,
            rep.first_bad_line
        );
    }
    let graphs = build_all(bufs, &mut rep)?;
    rep.elapsed = t0.elapsed();
    Ok((graphs, rep))
}

/// Calls `f` on every line of `r` (without its newline; at EOF the last line may lack
/// one), reading [`READ_SIZE`] bytes at a time. A line longer than the buffer is cut at its
/// end. Errors: a read failed, or `f`'s.
fn read_lines(
    r: &mut impl Read,
    path: &Path,
    mut f: impl FnMut(&[u8]) -> Result<(), LoadError>,
) -> Result<(), LoadError> {
    let mut buf = vec![0u8; READ_SIZE];
    let mut have = 0;
    let mut eof = false;
    while !eof || have > 0 {
        if !eof && have < buf.len() {
            match r.read(&mut buf[have..]) {
                Ok(0) => eof = true,
                Ok(n) => have += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(LoadError::Io {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
            if !eof && have < buf.len() {
                continue;
            }
        }
        if have == 0 {
            break;
        }
        // Whole lines in buf[..have]; at EOF the last line may lack its newline.
        let end = match buf[..have].iter().rposition(|&b| b == b'\n') {
            Some(at) => at + 1,
            None if eof || have == buf.len() => have,
            None => continue,
        };
        let text = buf[..end].strip_suffix(b"\n").unwrap_or(&buf[..end]);
        for line in text.split(|&b| b == b'\n') {
            f(line)?;
        }
        buf.copy_within(end..have, 0);
        have -= end;
    }
    Ok(())
}

/// The edges read so far, as packed (user, follower) entries per shard, and the counts.
struct Split {
    opts: LoadOptions,
    shards: usize,
    bufs: Vec<Vec<u64>>,
    rep: LoadReport,
}

impl Split {
    fn new(opts: LoadOptions) -> Split {
        let shards = opts.shards.max(1);
        Split {
            opts,
            shards,
            bufs: (0..shards).map(|_| Vec::new()).collect(),
            rep: LoadReport::default(),
        }
    }

    /// Takes one line of `path`. Errors: a bad line under `--strict`.
    fn line(&mut self, line: &[u8], path: &Path) -> Result<(), LoadError> {
        let rep = &mut self.rep;
        rep.lines += 1;
        match parse_line(line) {
            Ok(None) => {}
            Ok(Some((u, v))) if u == v => rep.self_loops += 1,
            Ok(Some((u, v))) => {
                rep.edges += 1;
                // (user, follower): v follows u's events, and in an undirected graph
                // u follows v's. A directed `u v` (u follows v) is (v, u) only.
                let shards = self.shards;
                self.bufs[owner_of(v, shards)].push(u64::from(v) << 32 | u64::from(u));
                if !self.opts.directed {
                    self.bufs[owner_of(u, shards)].push(u64::from(u) << 32 | u64::from(v));
                }
            }
            Err(why) => {
                let text = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
                if self.opts.strict {
                    return Err(LoadError::BadLine {
                        path: path.to_path_buf(),
                        line: rep.lines,
                        why,
                        text,
                    });
                }
                rep.bad_lines += 1;
                if rep.first_bad_line == 0 {
                    rep.first_bad_line = rep.lines;
                }
                if rep.bad_lines <= MAX_LOGGED {
                    tracing::warn!(
                        "friends: {}:{}: {why}: {text:?}; line skipped",
                        path.display(),
                        rep.lines
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Read};
    use std::path::Path;

    use super::{load_from, parse_line, LoadOptions};
    use crate::friends::{owner_of, ShardGraph};

    fn opts(shards: usize, directed: bool) -> LoadOptions {
        LoadOptions {
            shards,
            directed,
            strict: false,
        }
    }

    fn followers(gs: &[ShardGraph], u: u32) -> Vec<u32> {
        let mut v = Vec::new();
        gs[owner_of(u, gs.len())].followers(u, &mut v);
        v
    }

    #[test]
    fn lines() {
        assert_eq!(parse_line(b"1\t2"), Ok(Some((1, 2))));
        assert_eq!(parse_line(b"  10   20 \r"), Ok(Some((10, 20))));
        assert_eq!(parse_line(b"# Nodes: 3"), Ok(None));
        assert_eq!(parse_line(b""), Ok(None));
        assert_eq!(parse_line(b"\r"), Ok(None));
        assert_eq!(parse_line(b"4294967295 0"), Ok(Some((u32::MAX, 0))));
        assert!(parse_line(b"4294967296 0").is_err());
        assert!(parse_line(b"1").is_err());
        assert!(parse_line(b"1 2 3").is_err());
        assert!(parse_line(b"1,2").is_err());
        assert!(parse_line(b"a b").is_err());
        assert!(parse_line(b"-1 2").is_err());
    }

    #[test]
    fn undirected_directed_and_bad_lines() {
        let text = b"# comment\n1\t2\n1 3\n2 1\nbad line\n3 3\n4 5\n99999999999 1\n5 4";
        let p = Path::new("t.tsv");
        for shards in [1, 2, 3] {
            let (gs, rep) = load_from(&text[..], p, opts(shards, false)).unwrap();
            assert_eq!(rep.lines, 9);
            assert_eq!((rep.bad_lines, rep.first_bad_line), (2, 5));
            assert_eq!(rep.self_loops, 1);
            assert_eq!(rep.edges, 5);
            assert_eq!(rep.entries, 6, "1-2, 1-3, 4-5 both ways");
            assert_eq!(rep.duplicates, 4);
            assert_eq!(followers(&gs, 1), vec![2, 3]);
            assert_eq!(followers(&gs, 2), vec![1]);
            assert_eq!(followers(&gs, 4), vec![5]);
            assert_eq!(followers(&gs, 6), Vec::<u32>::new());
        }
        let (gs, _) = load_from(&b"1 2\n3 2\n"[..], p, opts(2, true)).unwrap();
        assert_eq!(followers(&gs, 2), vec![1, 3], "1 and 3 follow 2");
        assert_eq!(followers(&gs, 1), Vec::<u32>::new());
        let strict = LoadOptions {
            strict: true,
            ..opts(2, false)
        };
        let err = load_from(&text[..], p, strict).unwrap_err().to_string();
        assert!(err.starts_with("t.tsv:5: expected"), "{err}");
    }

    #[test]
    fn lines_across_reads() {
        // A reader that returns 3 bytes at a time splits lines everywhere.
        struct Slow<'a>(&'a [u8]);
        impl Read for Slow<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(3).min(out.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let text = b"100 200\n300 400\n500 600\n";
        let (gs, rep) = load_from(Slow(text), Path::new("s"), opts(2, false)).unwrap();
        assert_eq!((rep.lines, rep.edges, rep.bad_lines), (3, 3, 0));
        assert_eq!(followers(&gs, 600), vec![500]);
    }
}
