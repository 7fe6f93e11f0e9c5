//! The friends graph file (issue 7): edits kept across a restart by the journal, bad lines
//! of the edge file reported with their number (`--strict` stops at them), a missing file or
//! directory, a second server on the same file, and `gen-friends` cut off half way.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

both_backends! {
/// PUT and DELETE take effect at once, and again after a restart (replayed from the
/// journal, which the restart compacts).
fn edits_at_once_and_after_restart() {
    let dir = temp_dir("edits");
    let cfg = friends_config(&dir, 2, "1 2\n1 3\n");
    let server = start_with(cfg.clone());
    let addr = server.subscriber_addr();
    let mut s2 = Subscriber::connect(addr, "2");
    let mut s4 = Subscriber::connect(addr, "4");
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(edit(&mut p, "PUT", 4, 1), r#"{"changed":true}"#);
    assert_eq!(edit(&mut p, "PUT", 1, 4), r#"{"changed":false}"#, "symmetric: already friends");
    assert_eq!(edit(&mut p, "DELETE", 2, 1), r#"{"changed":true}"#);
    assert_eq!(edit(&mut p, "DELETE", 2, 1), r#"{"changed":false}"#);
    assert_eq!(edit(&mut p, "PUT", 7, 8), r#"{"changed":true}"#);
    assert_eq!(edit(&mut p, "DELETE", 8, 7), r#"{"changed":true}"#);
    assert_eq!(publish_friends(&mut p, "1", b"after edits"), r#"{"friends":2,"delivered":1}"#);
    expect_friend(&mut s4, 1, b"after edits");
    s2.client.expect_silence(Duration::from_millis(100), "2 is no friend of 1 any more");
    // 4 now has friend 1 (symmetric), and 4's events reach 1.
    let mut s1 = Subscriber::connect(addr, "1");
    assert_eq!(publish_friends(&mut p, "4", b"back"), r#"{"friends":1,"delivered":1}"#);
    expect_friend(&mut s1, 4, b"back");
    let journal = std::fs::read_to_string(dir.join("graph.tsv.journal")).unwrap();
    assert_eq!(journal, "+ 4 1\n+ 1 4\n- 2 1\n- 2 1\n+ 7 8\n- 8 7\n", "one line per edit, in order");
    drop((s1, s2, s4, p));
    server.shutdown().unwrap();

    let server = start_with(cfg);
    let addr = server.subscriber_addr();
    let mut s2 = Subscriber::connect(addr, "2");
    let mut s3 = Subscriber::connect(addr, "3");
    let mut s4 = Subscriber::connect(addr, "4");
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(publish_friends(&mut p, "1", b"restarted"), r#"{"friends":2,"delivered":2}"#);
    expect_friend(&mut s3, 1, b"restarted");
    expect_friend(&mut s4, 1, b"restarted");
    s2.client.expect_silence(Duration::from_millis(100), "the DELETE survived the restart");
    let mut lines: Vec<String> = std::fs::read_to_string(dir.join("graph.tsv.journal"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    assert_eq!(lines, vec!["+ 1 4", "- 1 2"], "compacted: the net change against the file");
    // The compacted journal is appended to as before.
    assert_eq!(edit(&mut p, "PUT", 2, 1), r#"{"changed":true}"#);
    assert_eq!(publish_friends(&mut p, "1", b"again"), r#"{"friends":3,"delivered":3}"#);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
}

both_backends! {
/// A bad line in the edge file is reported with its line number and skipped; `--strict`
/// stops the start at it instead, naming it too.
fn bad_edge_line_reported_with_its_number() {
    let dir = temp_dir("badline");
    let file = dir.join("bad.tsv");
    std::fs::write(&file, "# header\n1 2\n1 two\n\n1 3 4\n1 3\n").unwrap();
    let run = |strict: bool| {
        let mut serve = Serve::new().shards(2).args(["--friends".as_ref(), file.as_os_str()]);
        if strict {
            serve = serve.args(["--strict"]);
        }
        let (srv, listening) = serve.try_spawn();
        let (status, err) = srv.stop();
        (listening, status, err)
    };
    let (listening, _, err) = run(false);
    assert!(listening, "a bad line does not stop the start: {err}");
    let path = file.display();
    assert!(err.contains(&format!("{path}:3: expected a decimal id: \"1 two\"; line skipped")), "line 3 reported: {err}");
    assert!(err.contains(&format!("{path}:5: expected two ids: \"1 3 4\"; line skipped")), "line 5 reported: {err}");
    assert!(!err.contains(":2:") && !err.contains(":6:"), "good lines are not reported: {err}");
    let (listening, status, err) = run(true);
    assert!(!listening && !status.success(), "--strict stops at the bad line");
    assert!(err.contains(&format!("{path}:3: expected a decimal id: \"1 two\" (--strict")), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
}

both_backends! {
/// `--friends FILE` naming a file that does not exist: an empty graph that edits build up,
/// kept across a restart by the journal alone.
fn missing_file_is_an_empty_graph_built_by_edits() {
    let dir = temp_dir("missing");
    let mut cfg = common::server::local(2);
    cfg.friends = Some(dir.join("none.tsv"));
    let server = start_with(cfg.clone());
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(publish_friends(&mut p, "1", b"alone"), r#"{"friends":0,"delivered":0}"#);
    assert_eq!(edit(&mut p, "PUT", 2, 1), r#"{"changed":true}"#);
    drop(p);
    server.shutdown().unwrap();
    assert!(!dir.join("none.tsv").exists(), "the edge file is never written");
    let server = start_with(cfg);
    let mut s2 = Subscriber::connect(server.subscriber_addr(), "2");
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(publish_friends(&mut p, "1", b"hello 2"), r#"{"friends":1,"delivered":1}"#);
    expect_friend(&mut s2, 1, b"hello 2");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
}

both_backends! {
/// `--friends DIR/FILE` whose directory does not exist: the start fails with one error
/// naming the directory, before anything is loaded (no "empty graph" warning first, no
/// journal error after), and nothing is created.
fn missing_directory_is_one_clear_error() {
    let dir = temp_dir("nodir");
    let file = dir.join("nodir").join("x.tsv");
    let out = Serve::new()
        .shards(2)
        .args(["--friends".as_ref(), file.as_os_str()])
        .command()
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty(), "the start fails: {err}");
    let want = format!("--friends {}: the directory {} does not exist", file.display(), dir.join("nodir").display());
    assert!(err.contains(&want), "{want:?} in {err}");
    assert!(!err.contains("empty graph") && !err.contains("journal"), "one error only: {err}");
    assert!(!dir.join("nodir").exists(), "the directory is not created");
    // In process too: server::start returns the error.
    let mut cfg = common::server::local(2);
    cfg.friends = Some(file);
    let e = start_error(cfg, "start fails").to_string();
    assert!(e.contains(&want), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
}

both_backends! {
/// A second server on the same `--friends FILE` (in this process too: flock locks are per
/// open file description) fails to start, naming the file and saying another server uses
/// it; the first keeps its journal and goes on working. The load tester's read-only replay
/// still reads the journal meanwhile. Once the first stops, the file is free again.
fn second_server_on_the_same_file_fails_to_start() {
    let dir = temp_dir("twice");
    let cfg = friends_config(&dir, 2, "1 2\n");
    let file = dir.join("graph.tsv");
    let server = start_with(cfg.clone());
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(edit(&mut p, "PUT", 3, 1), r#"{"changed":true}"#);
    let e = start_error(cfg.clone(), "a second server on the file fails to start");
    let e = format!("{e:#}");
    let want = format!("--friends {}: another uring-comet server (pid {}) uses this graph file", file.display(), std::process::id());
    assert!(e.contains(&want) && e.contains("its own copy"), "{e}");
    // The first server's journal was neither compacted nor replaced: edits go on to it.
    let mut s3 = Subscriber::connect(server.subscriber_addr(), "3");
    assert_eq!(edit(&mut p, "PUT", 4, 1), r#"{"changed":true}"#);
    assert_eq!(std::fs::read_to_string(dir.join("graph.tsv.journal")).unwrap(), "+ 3 1\n+ 4 1\n");
    assert_eq!(publish_friends(&mut p, "1", b"still here"), r#"{"friends":3,"delivered":1}"#);
    expect_friend(&mut s3, 1, b"still here");
    // What `loadtest friends --graph FILE` does: load and replay, read only, no lock.
    let opts = uring_comet::friends::load::LoadOptions { shards: 1, directed: false, strict: false };
    let (mut gs, _) = uring_comet::friends::load::load(&file, opts).unwrap();
    let rep = uring_comet::friends::journal::replay(&dir.join("graph.tsv.journal"), &mut gs, false).unwrap();
    assert_eq!((rep.edits, rep.bad_lines), (2, 0));
    drop((p, s3));
    server.shutdown().unwrap();
    // Free again: a restart replays both edits.
    let server = start_with(cfg);
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(publish_friends(&mut p, "1", b"x"), r#"{"friends":3,"delivered":0}"#);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
}

/// `gen-friends` cut off half way (here by RLIMIT_FSIZE, a deterministic stand-in for a full
/// disk or a Ctrl-C mid-write): no cut-off graph under the output name for a later run (or
/// `loadtest friends`, which reuses any file there) to take as complete, no temporary file
/// left, and a complete file already there is kept as it was.
#[test]
fn gen_friends_cut_off_leaves_no_partial_graph() {
    use std::os::unix::process::CommandExt;
    let dir = temp_dir("gencut");
    let out = dir.join("g.tsv");
    let gen = |limit: Option<u64>| {
        let mut cmd = binary();
        cmd.args([
            "gen-friends",
            "--users",
            "20000",
            "--avg-friends",
            "10",
            "--seed",
            "2",
            "-o",
        ])
        .arg(&out)
        .stdin(Stdio::null());
        if let Some(bytes) = limit {
            // SAFETY: setrlimit and signal are async-signal-safe; the child only sets its
            // own file size limit, with SIGXFSZ ignored so the write fails with EFBIG.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: bytes,
                        rlim_max: bytes,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        cmd.output().unwrap()
    };
    let files = || {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let cut = gen(Some(64 << 10));
    assert!(!cut.status.success(), "the write past 64 KiB fails");
    let err = String::from_utf8_lossy(&cut.stderr);
    assert!(err.contains("File too large"), "{err}");
    assert!(
        files().is_empty(),
        "no partial graph, no temporary file: {:?}",
        files()
    );
    let whole = gen(None);
    assert!(
        whole.status.success(),
        "{}",
        String::from_utf8_lossy(&whole.stderr)
    );
    let complete = std::fs::read(&out).unwrap();
    assert!(complete.len() > 64 << 10 && complete.ends_with(b"\n"));
    assert_eq!(files(), vec!["g.tsv"]);
    assert!(!gen(Some(64 << 10)).status.success());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        complete,
        "the complete file is kept"
    );
    assert_eq!(files(), vec!["g.tsv"]);
    let _ = std::fs::remove_dir_all(&dir);
}
