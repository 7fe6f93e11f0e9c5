//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the same invariant
//! checks the cargo-fuzz targets run (`fuzz/src/checks.rs`), so a plain `cargo test` catches
//! a regression on every input the fuzzer found interesting, without cargo-fuzz or nightly.

// The one file of checks shared with the cargo-fuzz crate (`fuzz/`, its own workspace, which
// cargo-fuzz builds with nightly): there its items are the crate's `pub` API, here they sit
// in a private module, so `unreachable_pub` would ask for a visibility the fuzz crate cannot
// have. `#[path]` because `fuzz/` is not a dependency of this package.
#[allow(unreachable_pub)]
#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::path::Path;

/// Runs `check` on every file of `fuzz/corpus/<target>/`; a failure names the file.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "{}: only {} corpus inputs",
        dir.display(),
        files.len()
    );
    for f in &files {
        let data = std::fs::read(f).unwrap();
        if let Err(e) = std::panic::catch_unwind(|| check(&data)) {
            let why = e
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| e.downcast_ref::<&str>().copied())
                .unwrap_or("?");
            panic!(
                "{target}: corpus input {} ({} bytes, {:?}) fails: {why}",
                f.display(),
                data.len(),
                String::from_utf8_lossy(&data[..data.len().min(200)])
            );
        }
    }
}

#[test]
fn corpus_request_head() {
    replay("request_head", checks::request_head);
}

#[test]
fn corpus_id() {
    replay("id", checks::id);
}

#[test]
fn corpus_stream_message() {
    replay("stream_message", checks::stream_message);
}

#[test]
fn corpus_ws_frames() {
    replay("ws_frames", checks::ws_frames);
}

#[test]
fn corpus_chunked_body() {
    replay("chunked_body", checks::chunked_body);
}

/// A target's name and its check.
type Target = (&'static str, fn(&[u8]));

/// The stable fallback for machines without cargo-fuzz: the same checks on pseudo-random
/// mutations of the corpus (`cargo test --release --test fuzz_corpus -- --ignored`; the
/// iteration count from `FUZZ_ITERS`, default 200,000 per target).
#[test]
#[ignore = "long randomized run; the cargo-fuzz targets are the real fuzzers"]
fn randomized_mutations() {
    let iters: u64 = std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let targets: [Target; 5] = [
        ("request_head", checks::request_head),
        ("id", checks::id),
        ("stream_message", checks::stream_message),
        ("ws_frames", checks::ws_frames),
        ("chunked_body", checks::chunked_body),
    ];
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for (target, check) in targets {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        for _ in 0..iters {
            let mut d = seeds[next() as usize % seeds.len()].clone();
            for _ in 0..1 + next() % 4 {
                let at = if d.is_empty() {
                    0
                } else {
                    next() as usize % d.len()
                };
                match next() % 4 {
                    0 if !d.is_empty() => d[at] = next() as u8,
                    1 => d.insert(at, next() as u8),
                    2 if !d.is_empty() => {
                        d.remove(at);
                    }
                    _ => {
                        let other = &seeds[next() as usize % seeds.len()];
                        let from = next() as usize % (other.len() + 1);
                        d.splice(at..at, other[from..].iter().take(64).copied());
                    }
                }
            }
            if let Err(e) = std::panic::catch_unwind(|| check(&d)) {
                panic!("{target}: input {d:?} fails: {e:?}");
            }
        }
    }
}
