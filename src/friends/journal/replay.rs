//! Reading a journal back at start ([`replay`], also the load tester's) and rewriting it
//! compacted; see the parent module's doc for the torn-line and compaction rules.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::apply;
use crate::friends::load::parse_line;
use crate::friends::ShardGraph;

/// What a replay found.
#[derive(Debug, Clone, Copy, Default)]
pub struct Replay {
    /// Edit lines read and applied.
    pub edits: u64,
    /// Lines skipped: malformed ones, and a torn last line (see [`Replay::torn`]).
    pub bad_lines: u64,
    /// The last line had no terminating newline (a crash cut its write): it was skipped,
    /// whatever it held, because its edit was never acknowledged.
    pub torn: bool,
    /// Lines in the compacted journal.
    pub kept: u64,
}

/// Replays the journal at `path` (if it exists) into `graphs` and leaves the file as it is
/// (the load tester's copy of a served graph uses this).
///
/// Only whole lines (ending in `\n`) are applied. A last line without its newline is a
/// write a crash cut short (its edit was never acknowledged, and `+ 13 1` cut from
/// `+ 13 14` would still parse): it is logged with its line number and skipped. A line
/// that is not `+ a b` or `- a b` is logged and skipped; blank lines are ignored. Errors:
/// the file cannot be opened (other than not existing) or read.
pub fn replay(path: &Path, graphs: &mut [ShardGraph], directed: bool) -> io::Result<Replay> {
    let mut rep = Replay::default();
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(rep),
        Err(e) => return Err(e),
    };
    let mut r = BufReader::new(f);
    let mut line = Vec::new();
    let mut n = 0u64;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        n += 1;
        let text = match line.strip_suffix(b"\n") {
            Some(text) => text,
            None if line.iter().all(u8::is_ascii_whitespace) => break,
            None => {
                rep.bad_lines += 1;
                rep.torn = true;
                tracing::warn!(
                    "friends journal {}:{n}: last line has no newline (a write cut short by a crash; never acknowledged): {:?}; skipped",
                    path.display(),
                    String::from_utf8_lossy(&line[..line.len().min(80)])
                );
                break;
            }
        };
        match parse_edit(text) {
            Some((add, a, b)) => {
                rep.edits += 1;
                apply(graphs, add, a, b, directed);
            }
            None if text.iter().all(u8::is_ascii_whitespace) => {}
            None => {
                rep.bad_lines += 1;
                tracing::warn!(
                    "friends journal {}:{n}: not `+ a b` or `- a b`: {:?}; skipped",
                    path.display(),
                    String::from_utf8_lossy(&text[..text.len().min(80)])
                );
            }
        }
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
pub(super) fn compact(path: &Path, graphs: &[ShardGraph], directed: bool) -> io::Result<u64> {
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
    use std::path::Path;

    use super::replay;
    use crate::friends::journal::tests::{graphs, has, temp_dir};
    use crate::friends::journal::Journal;
    use crate::friends::load::{load_from, LoadOptions};
    use crate::friends::{owner_of, ShardGraph};

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
        assert_eq!((rep.edits, rep.bad_lines, rep.torn), (5, 2, true));
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

    #[test]
    fn torn_last_line_is_skipped_not_compacted() {
        let dir = temp_dir("torn");
        let j = dir.join("g.tsv.journal");
        // `+ 13 14\n` cut by a crash after `+ 13 1`: it still parses, but was never
        // acknowledged (no newline, no fdatasync), so it must not become an edge.
        std::fs::write(&j, "+ 5 6\n+ 13 1").unwrap();
        let mut gs = graphs(2);
        let rep = replay(&j, &mut gs, false).unwrap();
        assert_eq!((rep.edits, rep.bad_lines, rep.torn), (1, 1, true));
        assert!(has(&gs, 5, 6) && !has(&gs, 13, 1) && !has(&gs, 1, 13));
        let mut gs = graphs(2);
        let (_, rep) = Journal::start(&j, &mut gs, false).unwrap();
        assert_eq!((rep.edits, rep.torn, rep.kept), (1, true, 1));
        assert_eq!(
            std::fs::read_to_string(&j).unwrap(),
            "+ 5 6\n",
            "compaction drops it"
        );
        assert!(!has(&gs, 13, 1));
        // Whole lines, the last one included, are all applied; a missing journal is empty.
        std::fs::write(&j, "+ 5 6\n\n+ 13 1\n").unwrap();
        let mut gs = graphs(2);
        let rep = replay(&j, &mut gs, false).unwrap();
        assert_eq!((rep.edits, rep.bad_lines, rep.torn), (2, 0, false));
        assert!(has(&gs, 13, 1));
        let rep = replay(&dir.join("none"), &mut gs, false).unwrap();
        assert_eq!((rep.edits, rep.bad_lines, rep.torn), (0, 0, false));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
