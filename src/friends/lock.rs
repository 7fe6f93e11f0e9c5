//! Start-up checks of `--friends FILE`: its directory exists ([`check_dir`]), and no other
//! server uses the file ([`GraphLock`], on `FILE.lock`).
//!
//! # Why a lock
//! A server owns its graph's journal: it compacts it at start (renaming a new journal over
//! the old one) and appends to it while it runs. A second server on the same FILE would
//! rename its compacted journal over the first one's, and the first would go on appending
//! (and acknowledging) edits to the unlinked file: lost at its next restart. So a server
//! holds an exclusive advisory lock (`flock(LOCK_EX | LOCK_NB)`) for as long as it runs, and
//! a second one fails to start. Each server, and each node of a cluster, needs its own copy
//! of the graph file.
//!
//! # Which file
//! `FILE.lock`, beside the graph, created if missing and never renamed or removed by the
//! server (removing it by hand while a server runs would let a second one lock a new
//! file). Not the journal: compaction renames a new file over it, and a lock stays with the
//! old inode. Not the graph file itself: it may not exist (a missing FILE is an empty graph
//! built by the journal alone, and the server never creates or writes FILE), and a graph
//! replaced by renaming a new version over it would be a new inode, unlocked. The lock file
//! holds the holder's process id (text, rewritten in place) for the error message of the
//! next one; a lock left by a server that died is released by the kernel with its file
//! descriptors.
//!
//! The load tester (`loadtest friends --graph FILE`) reads FILE and its journal without
//! this lock: reading while a server holds it is fine.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Why `--friends FILE` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The directory FILE is in does not exist.
    #[error("--friends {graph}: the directory {dir} does not exist (create it, or fix the path)")]
    NoDir {
        /// The graph file.
        graph: PathBuf,
        /// Its directory.
        dir: PathBuf,
    },
    /// What should be FILE's directory is something else.
    #[error("--friends {graph}: {dir} is not a directory")]
    NotDir {
        /// The graph file.
        graph: PathBuf,
        /// What its directory should be.
        dir: PathBuf,
    },
    /// Another server holds the lock.
    #[error("--friends {graph}: another uring-comet server{holder} uses this graph file (it holds the lock {lock}); a server must not share it: give each server, and each cluster node, its own copy of the file")]
    InUse {
        /// The graph file.
        graph: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// ` (pid N)` if the lock file names its holder, else empty.
        holder: String,
    },
    /// The directory or the lock file could not be examined, created or locked.
    #[error("--friends {graph}: {path}: {source}")]
    Io {
        /// The graph file.
        graph: PathBuf,
        /// The file or directory at fault.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// The directory of `graph` (`.` for a bare file name).
fn dir_of(graph: &Path) -> &Path {
    match graph.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Checks that the directory of `graph` exists and is a directory. Errors:
/// [`LockError::NoDir`], [`LockError::NotDir`], or [`LockError::Io`] if it cannot be
/// examined (e.g. permission denied).
pub fn check_dir(graph: &Path) -> Result<(), LockError> {
    let dir = dir_of(graph);
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(LockError::NotDir {
            graph: graph.to_path_buf(),
            dir: dir.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(LockError::NoDir {
            graph: graph.to_path_buf(),
            dir: dir.to_path_buf(),
        }),
        Err(source) => Err(LockError::Io {
            graph: graph.to_path_buf(),
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// The lock path of graph file `graph`: `graph` with `.lock` appended.
pub fn path_for(graph: &Path) -> PathBuf {
    let mut p = graph.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// An exclusive `flock` on `FILE.lock`, held until dropped (or the process ends).
#[derive(Debug)]
pub struct GraphLock {
    /// Open (close-on-exec, so a child process does not inherit it) for as long as the lock
    /// is held: closing the last descriptor of the open file releases it.
    _file: File,
}

impl GraphLock {
    /// Checks the directory of `graph` ([`check_dir`]), then creates `graph.lock` if needed
    /// and locks it, without waiting. Errors: [`check_dir`]'s, [`LockError::InUse`] if
    /// another server (another open of the file, in this process too) holds it, and
    /// [`LockError::Io`] if it cannot be opened or locked.
    pub fn take(graph: &Path) -> Result<GraphLock, LockError> {
        check_dir(graph)?;
        let path = path_for(graph);
        let io_err = |source| LockError::Io {
            graph: graph.to_path_buf(),
            path: path.clone(),
            source,
        };
        // Read-write to note our pid; a lock file we may only read locks as well.
        let (mut file, writable) = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
        {
            Ok(f) => (f, true),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                (File::open(&path).map_err(io_err)?, false)
            }
            Err(e) => return Err(io_err(e)),
        };
        loop {
            // SAFETY: flock on a descriptor `file` owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    let holder = match text.trim().parse::<u32>() {
                        Ok(pid) => format!(" (pid {pid})"),
                        Err(_) => String::new(),
                    };
                    return Err(LockError::InUse {
                        graph: graph.to_path_buf(),
                        lock: path,
                        holder,
                    });
                }
                _ => return Err(io_err(e)),
            }
        }
        // Our pid, for the next one's message; the lock does not depend on it.
        if writable {
            let pid = std::process::id();
            let noted = file
                .set_len(0)
                .and_then(|()| file.seek(SeekFrom::Start(0)))
                .and_then(|_| writeln!(file, "{pid}"));
            if let Err(e) = noted {
                tracing::warn!("friends: {}: cannot note our pid: {e}", path.display());
            }
        }
        Ok(GraphLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::{check_dir, path_for, GraphLock, LockError};

    #[test]
    fn dir_is_checked() {
        let dir = std::env::temp_dir().join(format!("uc-lock-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        check_dir(&dir.join("g.tsv")).unwrap();
        let e = check_dir(&dir.join("none/g.tsv")).unwrap_err();
        assert!(matches!(e, LockError::NoDir { .. }), "{e}");
        let none = dir.join("none").display().to_string();
        assert!(
            e.to_string()
                .contains(&format!("the directory {none} does not exist")),
            "{e}"
        );
        assert!(!dir.join("none").exists(), "not created");
        let file = dir.join("f");
        std::fs::write(&file, "").unwrap();
        let e = check_dir(&file.join("g.tsv")).unwrap_err();
        assert!(matches!(e, LockError::NotDir { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lock_is_exclusive_until_dropped() {
        let dir = std::env::temp_dir().join(format!("uc-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let g = dir.join("g.tsv");
        let held = GraphLock::take(&g).unwrap();
        assert!(!g.exists(), "the graph file is not created");
        // A second open of the lock file is a second open file description: it conflicts,
        // in this process too.
        let e = GraphLock::take(&g).unwrap_err();
        assert!(matches!(e, LockError::InUse { .. }), "{e}");
        let pid = std::process::id();
        let lock = path_for(&g).display().to_string();
        let e = e.to_string();
        assert!(
            e.contains(&format!(
                "another uring-comet server (pid {pid}) uses this graph file"
            )) && e.contains(&lock),
            "{e}"
        );
        drop(held);
        let again = GraphLock::take(&g).unwrap();
        let noted = std::fs::read_to_string(path_for(&g)).unwrap();
        assert_eq!(noted, format!("{pid}\n"));
        drop(again);
        // A missing directory is reported before any lock file is made.
        let e = GraphLock::take(&dir.join("none/g.tsv")).unwrap_err();
        assert!(matches!(e, LockError::NoDir { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
