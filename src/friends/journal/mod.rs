//! The journal of friends edits: `FILE.journal` beside the edge file, append-only, one edit
//! per line: `+ a b` (b is now on a's friends list) or `- a b` (b is off it).
//!
//! # Durability (fsync policy)
//! Every edit is appended and `fdatasync`ed before its HTTP reply is written: a `200` means
//! the edit survives a crash or power loss. The shard that coordinates the edit does the
//! write under a process-wide lock, so the journal's order is the order edits were applied.
//! An edit costs one fdatasync (about 0.1-10 ms by disk) on that shard; edits are rare
//! next to publishes. An append that fails (its write or its fdatasync) is answered 500 and
//! cut off: the journal keeps the length of its acknowledged lines and truncates the file
//! back to it, so no later edit is written after a partial line (if the truncation fails
//! too, every edit is refused until a retried one succeeds). A crash in the middle of a
//! write leaves a torn last line, whose edit was never acknowledged: a last line without its
//! terminating newline is skipped (logged with its line number) on replay even if what is
//! left of it still parses, and so it is not kept by compaction.
//!
//! # Start: replay and compaction
//! On start the edge file is loaded, then the journal is replayed on top of it (into the
//! shards' overlays), then rewritten compacted: one line per edge whose state differs from
//! the file, written to `FILE.journal.tmp`, fsynced and renamed over the journal (then the
//! directory is fsynced). The edge file itself is never written.
//!
//! # Files
//! - this file: edit halves and coordinators, and the open [`Journal`] (append, cut back).
//! - `replay`: reading a journal back ([`replay`], [`parse_edit`]) and compacting it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{lock::GraphLock, owner_of, ShardGraph};

mod replay;

pub use replay::{parse_edit, replay, Replay};

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

/// The open journal, appended to by the shards (behind a mutex).
///
/// It keeps the length of its good content (whole lines, each acknowledged), and writes each
/// line at that offset. When an append fails (the write, or its fdatasync), the file is cut
/// back to that length, so the remains of the failed line (a partial line after a short
/// write, or a whole line whose fdatasync failed, never acknowledged) are never followed by
/// a later edit: every acknowledged edit is a whole line of its own. If even the cut fails,
/// every append is refused (the caller answers 500) until a retried cut succeeds.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    /// Bytes of whole, acknowledged lines: where the next line is written.
    good_len: u64,
    /// The file may hold bytes past `good_len` that could not be cut off yet.
    dirty: bool,
    /// The server's lock on the graph file, held as long as the journal can be appended to.
    _lock: Option<GraphLock>,
    #[cfg(test)]
    faults: Faults,
}

/// Failures a unit test makes the next appends meet, with the real file underneath.
#[cfg(test)]
#[derive(Debug, Default)]
struct Faults {
    /// The next write stores only this many bytes of its line, then fails with ENOSPC (what
    /// a full disk does).
    short_write: Option<usize>,
    /// The next fdatasync after a whole line was written fails with EIO.
    sync: bool,
    /// The next this many cut-backs fail with EIO.
    cuts: u32,
}

impl Journal {
    /// Replays the journal at `path` (if it exists) into `graphs`, rewrites it compacted,
    /// and opens it for appending. Errors: the journal cannot be read, written, renamed or
    /// fsynced (see [`replay`] and the module doc).
    pub fn start(
        path: &Path,
        graphs: &mut [ShardGraph],
        directed: bool,
    ) -> io::Result<(Journal, Replay)> {
        let mut rep = replay(path, graphs, directed)?;
        rep.kept = replay::compact(path, graphs, directed)?;
        // Not O_APPEND: each line is written at `good_len` (pwrite).
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let good_len = file.metadata()?.len();
        let j = Journal {
            file,
            path: path.to_path_buf(),
            good_len,
            dirty: false,
            _lock: None,
            #[cfg(test)]
            faults: Faults::default(),
        };
        Ok((j, rep))
    }

    /// The journal, holding `lock` (the server's lock on its graph file) until it is dropped:
    /// no other server may compact or append to this journal meanwhile.
    pub fn holding(mut self, lock: GraphLock) -> Journal {
        self._lock = Some(lock);
        self
    }

    /// Appends edit `a b` (the line `+ a b` or `- a b`) and fdatasyncs it; `Ok` means it is
    /// durable. Errors: the write or the fdatasync failed (the journal is then cut back to
    /// its last acknowledged line), or the remains of an earlier failed append could not be
    /// cut off (every append is refused until they can be); the edit must not be applied.
    pub fn append(&mut self, add: bool, a: u32, b: u32) -> io::Result<()> {
        if self.dirty {
            self.cut_back().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "{} still holds the remains of a failed write past byte {}, which cannot be cut off ({e}); edits are refused until they can",
                        self.path.display(),
                        self.good_len
                    ),
                )
            })?;
            tracing::warn!(
                "friends journal {}: the remains of a failed write are cut off; edits accepted again",
                self.path.display()
            );
        }
        let line = format!("{} {a} {b}\n", if add { '+' } else { '-' });
        if let Err(e) = self.write_line(line.as_bytes()) {
            if let Err(cut) = self.cut_back() {
                tracing::error!(
                    "friends journal {}: after a failed write ({e}), cutting it back to {} bytes failed too ({cut}); edits are refused until a retried cut succeeds",
                    self.path.display(),
                    self.good_len
                );
            }
            return Err(e);
        }
        self.good_len += line.len() as u64;
        Ok(())
    }

    /// Writes `line` at the end of the good content and fdatasyncs it.
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(n) = self.faults.short_write.take() {
            self.file
                .write_all_at(&line[..n.min(line.len())], self.good_len)?;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.file.write_all_at(line, self.good_len)?;
        #[cfg(test)]
        if std::mem::take(&mut self.faults.sync) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.file.sync_data()
    }

    /// Cuts the file back to its good content (and fdatasyncs the new length); until that
    /// succeeds the journal is dirty and refuses appends.
    fn cut_back(&mut self) -> io::Result<()> {
        self.dirty = true;
        #[cfg(test)]
        if self.faults.cuts > 0 {
            self.faults.cuts -= 1;
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.file.set_len(self.good_len)?;
        self.file.sync_data()?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::{owner_of, replay, Journal, Replay, ShardGraph};
    use crate::friends::load::{load_from, LoadOptions};

    /// A fresh temp directory for one test.
    pub(super) fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("uc-journal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub(super) fn graphs(shards: usize) -> Vec<ShardGraph> {
        let opts = LoadOptions {
            shards,
            directed: false,
            strict: false,
        };
        load_from(&b"1 2\n"[..], Path::new("g"), opts).unwrap().0
    }

    pub(super) fn has(gs: &[ShardGraph], u: u32, f: u32) -> bool {
        gs[owner_of(u, gs.len())].has(u, f)
    }

    /// The journal's lines as written, and what a restart's replay makes of them.
    fn on_restart(j: &Path) -> (String, Replay, Vec<ShardGraph>) {
        let text = std::fs::read_to_string(j).unwrap();
        let mut gs = graphs(2);
        let rep = replay(j, &mut gs, false).unwrap();
        (text, rep, gs)
    }

    #[test]
    fn failed_append_is_cut_back_so_later_edits_stay_whole() {
        let dir = temp_dir("fail");
        let j = dir.join("g.tsv.journal");
        let mut gs = graphs(2);
        let (mut journal, _) = Journal::start(&j, &mut gs, false).unwrap();
        journal.append(true, 1, 5).unwrap();
        // A short write (disk full): `+ 1` of `+ 13 14` is written, then ENOSPC. The next
        // edit, acknowledged, must be a line of its own, not `+ 1+ 7 4242`.
        journal.faults.short_write = Some(3);
        let e = journal.append(true, 13, 14).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(std::fs::read_to_string(&j).unwrap(), "+ 1 5\n", "cut back");
        journal.append(true, 7, 4242).unwrap();
        // A whole line whose fdatasync fails was never acknowledged: cut off too, even when
        // the next line is shorter than it.
        journal.faults.sync = true;
        assert!(journal.append(false, 4_000_000_000, 4_000_000_001).is_err());
        journal.append(true, 2, 3).unwrap();
        let (text, rep, gs) = on_restart(&j);
        assert_eq!(text, "+ 1 5\n+ 7 4242\n+ 2 3\n");
        assert_eq!((rep.edits, rep.bad_lines, rep.torn), (3, 0, false));
        assert!(has(&gs, 7, 4242) && has(&gs, 2, 3) && !has(&gs, 13, 14));
        // The cut fails as well: appends are refused (the remains stay) until it succeeds.
        journal.faults.short_write = Some(4);
        journal.faults.cuts = 2;
        assert!(journal.append(true, 21, 22).is_err());
        assert_eq!(std::fs::read_to_string(&j).unwrap(), format!("{text}+ 21"));
        let e = journal.append(true, 8, 9).unwrap_err().to_string();
        assert!(e.contains("remains of a failed write past byte 21"), "{e}");
        assert_eq!(std::fs::read_to_string(&j).unwrap(), format!("{text}+ 21"));
        journal.append(true, 8, 9).unwrap();
        let (text, rep, gs) = on_restart(&j);
        assert_eq!(text, "+ 1 5\n+ 7 4242\n+ 2 3\n+ 8 9\n");
        assert_eq!((rep.edits, rep.bad_lines), (4, 0));
        assert!(has(&gs, 8, 9) && !has(&gs, 21, 22));
        drop(journal);
        // A restart appends after the compacted content, at its length.
        let mut gs = graphs(2);
        let (mut journal, rep) = Journal::start(&j, &mut gs, false).unwrap();
        assert_eq!(rep.kept, 4);
        journal.append(false, 1, 5).unwrap();
        let (text, rep, _) = on_restart(&j);
        assert!(
            text.ends_with("- 1 5\n") && text.lines().count() == 5,
            "{text:?}"
        );
        assert_eq!((rep.edits, rep.bad_lines), (5, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
