//! Start-up checks of `--friends FILE`: its directory exists ([`check_dir`]).

use std::io;
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
    /// The directory could not be examined.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
