//! Tests of the generator: determinism, the degree distribution, the file written whole.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{degrees, generate, temp_name, write_whole, DegreeStats, GenArgs, GraphShape};
use std::os::unix::fs::FileTypeExt;

fn args(users: u32, avg: f64, seed: u64) -> GenArgs {
    GenArgs {
        shape: GraphShape {
            users,
            avg_friends: avg,
            seed,
        },
        exponent: 2.5,
        max_degree: None,
        local: 0.3,
        community: 64,
        output: PathBuf::from("/dev/null"),
    }
}

#[test]
fn deterministic_heavy_tailed() {
    let a = generate(&args(20_000, 20.0, 7)).unwrap();
    let b = generate(&args(20_000, 20.0, 7)).unwrap();
    assert_eq!(a, b, "same seed, same graph");
    assert_ne!(a, generate(&args(20_000, 20.0, 8)).unwrap());
    assert!(a.windows(2).all(|w| w[0] < w[1]), "sorted, unique");
    assert!(a.iter().all(|&e| (e >> 32) < (e & 0xffff_ffff)));
    let s = DegreeStats::of(degrees(&a, 20_000));
    assert!((s.mean - 20.0).abs() < 0.5, "{s:?}");
    assert!(
        s.median < 20 && s.max > 10 * s.median && s.p99 > 3 * s.median,
        "heavy tail: {s:?}"
    );
}

/// A fresh temp directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("uc-gen-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn written_whole_or_not_at_all() {
    let dir = temp_dir("whole");
    let out = dir.join("g.tsv");
    // Interrupted half way (a full disk, say): the final name never exists, and the
    // partial temporary file is removed.
    let e = write_whole(&out, |w| {
        w.write_all(b"1\t2\n3\t")?;
        w.flush()?;
        assert!(!out.exists(), "not under the final name while writing");
        assert_eq!(
            names(&dir),
            vec![format!("g.tsv.tmp-{}", std::process::id())]
        );
        Err(io::Error::from_raw_os_error(libc::ENOSPC))
    })
    .unwrap_err();
    assert!(format!("{e:#}").contains("No space left"), "{e:#}");
    assert!(names(&dir).is_empty(), "{:?}", names(&dir));
    // Complete: renamed into place.
    write_whole(&out, |w| w.write_all(b"1\t2\n")).unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "1\t2\n");
    assert_eq!(names(&dir), vec!["g.tsv"]);
    // A failed rewrite leaves the complete file as it was.
    assert!(write_whole(&out, |w| {
        w.write_all(b"9\t")?;
        Err(io::Error::other("interrupted"))
    })
    .is_err());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "1\t2\n");
    // A leftover of a run whose process is gone is removed; a live one's is not.
    let stale = temp_name(&out, 4_000_000_000);
    let live = temp_name(&out, 1);
    std::fs::write(&stale, "1\t").unwrap();
    std::fs::write(&live, "1\t").unwrap();
    write_whole(&out, |w| w.write_all(b"5\t6\n")).unwrap();
    assert!(!stale.exists() && live.exists());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "5\t6\n");
    // Not a regular file: written directly, not replaced.
    write_whole(Path::new("/dev/null"), |w| w.write_all(b"x")).unwrap();
    assert!(Path::new("/dev/null")
        .metadata()
        .unwrap()
        .file_type()
        .is_char_device());
    std::fs::remove_dir_all(&dir).unwrap();
}
