//! `loadtest million` against a server that dies mid-run (issue 20): the load tester exits
//! non-zero with a report that says how the server ended (here SIGKILL, sent by this test to
//! the server's pid) and how many subscribers were connected, in text and in `--json`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// The pid of `parent`'s child running `serve`, once it exists (at most 10 s).
fn server_pid(parent: u32) -> Option<u32> {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        let kids = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        for pid in kids
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmd.split(|&b| b == 0).any(|a| a == b"serve") {
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Runs `loadtest million` slowly (20,000 subscribers at 2,000/s), kills its server with
/// SIGKILL a second after connecting began (the load tester's `server pid ... idle RSS`
/// line: a kill before it, while the idle RSS settles, would test the start instead);
/// returns the exit status's success and the output.
fn run_and_kill(json: bool) -> (bool, String) {
    let mut cmd = binary();
    cmd.args([
        "loadtest",
        "million",
        "--conns",
        "20000",
        "--connect-rate",
        "2000",
    ]);
    if json {
        cmd.arg("--json");
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = server_pid(child.id()).expect("the load tester started its server");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("idle RSS") {
                let _ = tx.send(());
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let connecting = rx.recv_timeout(Duration::from_secs(30)).is_ok();
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: kill(2) of the server this test's child started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let out = child.wait_with_output().unwrap();
    let err = reader.join().unwrap();
    assert!(connecting, "the load tester began connecting: {err}");
    let text = format!("{}{err}", String::from_utf8_lossy(&out.stdout));
    (out.status.success(), text)
}

#[test]
fn a_killed_server_is_reported() {
    let (ok, text) = run_and_kill(false);
    assert!(!ok, "the load tester exits non-zero: {text}");
    let line = text
        .lines()
        .find(|l| l.contains("DIED"))
        .unwrap_or_else(|| panic!("a DIED line: {text}"));
    assert!(line.contains("signal 9"), "{line}");
    assert!(line.contains("subscribers connected"), "{line}");

    let (ok, text) = run_and_kill(true);
    assert!(!ok, "--json: exits non-zero too: {text}");
    let json = text
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("a JSON report: {text}"));
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["server_death"]["signal"], 9, "{v}");
    assert!(v["server_death"]["connected"].as_u64().is_some(), "{v}");
    assert_eq!(v["passed"], false);
}
