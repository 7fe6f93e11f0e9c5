//! The journal of friends edits: `FILE.journal` beside the edge file, append-only, one edit
//! per line: `+ a b` (b is now on a's friends list) or `- a b` (b is off it).
//!
//! # Durability (fsync policy)
//! Every edit is appended and `fdatasync`ed before its HTTP reply is written: a `200` means
//! the edit survives a crash or power loss. The shard that coordinates the edit does the
//! write under a process-wide lock, so the journal's order is the order edits were applied.
//! An edit costs one fdatasync (about 0.1-10 ms by disk) on that shard; edits are rare
//! next to publishes. A crash in the middle of a write leaves a torn last line, whose edit
//! was never acknowledged: it is skipped (logged) on replay.
//!
//! # Start: replay and compaction
//! On start the edge file is loaded, then the journal is replayed on top of it (into the
//! shards' overlays), then rewritten compacted: one line per edge whose state differs from
//! the file, written to `FILE.journal.tmp`, fsynced and renamed over the journal (then the
//! directory is fsynced). The edge file itself is never written.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{load::parse_line, owner_of, ShardGraph};

/// The journal path of edge file `graph`: `graph` with `.journal` appended.
pub fn path_for(graph: &Path) -> PathBuf {
    let mut p = graph.as_os_str().to_owned();
    p.push(".journal");
    PathBuf::from(p)
}

/// The (user, follower) halves of edit `a b` (b on a's friends list: a receives b's
/// events; undirected: b receives a's too). The second is `None` when directed.
pub fn halves(a: u32, b: u32, directed: bool) -> [Option<(u32, u32)>; 2] {
    [Some((b, a)), (!directed).then_some((a, b))]
}

/// The shard that coordinates edits of the pair `a b`: every edit of one edge goes through
/// the same shard, so they are applied and journaled in one order.
pub fn coordinator(a: u32, b: u32, directed: bool, shards: usize) -> usize {
    if directed {
        owner_of(b, shards)
    } else {
        owner_of(a.min(b), shards)
    }
}

/// Applies edit `a b` to the shard parts it touches (all shards in hand, as at start).
pub fn apply(graphs: &mut [ShardGraph], add: bool, a: u32, b: u32, directed: bool) -> bool {
    let mut changed = false;
    for (u, f) in halves(a, b, directed).into_iter().flatten() {
        let g = &mut graphs[owner_of(u, graphs.len())];
        changed |= if add { g.add(u, f) } else { g.remove(u, f) };
    }
    changed
}

/// What a replay found.
#[derive(Debug, Clone, Copy, Default)]
pub struct Replay {
    /// Edit lines read.
    pub edits: u64,
    /// Lines skipped as malformed (a torn last line after a crash).
    pub bad_lines: u64,
    /// Lines in the compacted journal.
    pub kept: u64,
}

/// The open journal, appended to by the shards (behind a mutex).
#[derive(Debug)]
pub struct Journal {
    file: File,
}

impl Journal {
    /// Replays the journal at `path` (if it exists) into `graphs`, rewrites it compacted,
    /// and opens it for appending.
    pub fn start(
        path: &Path,
        graphs: &mut [ShardGraph],
        directed: bool,
    ) -> io::Result<(Journal, Replay)> {
        let mut rep = replay(path, graphs, directed)?;
        rep.kept = compact(path, graphs, directed)?;
        let file = OpenOptions::new().append(true).create(true).open(path)?;
        Ok((Journal { file }, rep))
    }

    /// Appends edit `a b` and fdatasyncs it; `Ok` means it is durable.
    pub fn append(&mut self, add: bool, a: u32, b: u32) -> io::Result<()> {
        let line = format!("{} {a} {b}\n", if add { '+' } else { '-' });
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data()
    }
}

/// Replays the journal at `path` (if it exists) into `graphs` and leaves the file as it is
/// (the load tester's copy of a served graph uses this).
pub fn replay(path: &Path, graphs: &mut [ShardGraph], directed: bool) -> io::Result<Replay> {
    let mut rep = Replay::default();
    match File::open(path) {
        Ok(f) => {
            for (n, line) in BufReader::new(f).split(b'\n').enumerate() {
                let line = line?;
                match parse_edit(&line) {
                    Some((add, a, b)) => {
                        rep.edits += 1;
                        apply(graphs, add, a, b, directed);
                    }
                    None if line.iter().all(u8::is_ascii_whitespace) => {}
                    None => {
                        rep.bad_lines += 1;
                        tracing::warn!(
                            "friends journal {}:{}: not `+ a b` or `- a b`: {:?}; skipped",
                            path.display(),
                            n + 1,
                            String::from_utf8_lossy(&line[..line.len().min(80)])
                        );
                    }
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(rep)
}

/// Parses `+ a b` or `- a b`.
pub fn parse_edit(line: &[u8]) -> Option<(bool, u32, u32)> {
    let add = match line.first()? {
        b'+' => true,
        b'-' => false,
        _ => return None,
    };
    match parse_line(line.get(1..)?) {
        Ok(Some((a, b))) if a != b => Some((add, a, b)),
        _ => None,
    }
}

/// Writes the overlay of `graphs` as the new journal at `path`, atomically; returns its lines.
fn compact(path: &Path, graphs: &[ShardGraph], directed: bool) -> io::Result<u64> {
    let tmp = {
        let mut p = path.as_os_str().to_owned();
        p.push(".tmp");
        PathBuf::from(p)
    };
    let mut w = BufWriter::new(File::create(&tmp)?);
    let mut n = 0;
    for g in graphs {
        for (u, f, added) in g.edits() {
            // (u, f): f follows u, i.e. u is on f's list: `± f u`. Undirected overlays hold
            // both halves of each edge; one line restores both.
            if !directed && f > u {
                continue;
            }
            writeln!(w, "{} {f} {u}", if added { '+' } else { '-' })?;
            n += 1;
        }
    }
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::friends::load::{load_from, LoadOptions};

    #[test]
    fn replay_and_compact() {
        let dir = std::env::temp_dir().join(format!("uc-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let j = dir.join("g.tsv.journal");
        std::fs::write(&j, "+ 1 5\n- 1 2\n+ 7 8\n- 7 8\n+ 1 3\ngarbage\n+ 9").unwrap();
        let opts = LoadOptions {
            shards: 2,
            directed: false,
            strict: false,
        };
        let (mut gs, _) = load_from(&b"1 2\n1 3\n"[..], Path::new("g"), opts).unwrap();
        let (mut journal, rep) = Journal::start(&j, &mut gs, false).unwrap();
        assert_eq!((rep.edits, rep.bad_lines), (5, 2));
        // Net: 1-5 added, 1-2 removed; 7-8 and 1-3 no change.
        assert_eq!(rep.kept, 2);
        let mut text: Vec<String> = std::fs::read_to_string(&j)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        text.sort();
        assert_eq!(text, vec!["+ 1 5", "- 1 2"]);
        journal.append(true, 2, 9).unwrap();
        assert!(std::fs::read_to_string(&j).unwrap().ends_with("+ 2 9\n"));
        let f = |gs: &[ShardGraph], u: u32| {
            let mut v = Vec::new();
            gs[owner_of(u, 2)].followers(u, &mut v);
            v.sort();
            v
        };
        assert_eq!(f(&gs, 1), vec![3, 5]);
        assert_eq!(f(&gs, 5), vec![1]);
        assert_eq!(f(&gs, 2), Vec::<u32>::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
