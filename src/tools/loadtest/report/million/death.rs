//! A server that died during `loadtest million` ([`ServerDeath`]): how it ended (exit status
//! or signal, waitpid(2)), whether the kernel log shows an OOM kill of its pid, and how many
//! subscribers were connected when the load tester saw it gone; as text and JSON.

use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitStatus;

use super::json_str;

/// How the server ended during the run.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ServerDeath {
    /// Its exit code (`None`: a signal ended it).
    pub exit_code: Option<i32>,
    /// The signal that ended it (`None`: it exited).
    pub signal: Option<i32>,
    /// The kernel log line of an OOM kill of its pid (`None`: none seen, or no log readable).
    pub oom: Option<String>,
    /// Whether the kernel log could be read (dmesg(1) needs CAP_SYSLOG when
    /// `kernel.dmesg_restrict` is 1).
    pub log_readable: bool,
    /// Subscribers connected (200 head seen) when the death was seen.
    pub connected: u64,
}

impl ServerDeath {
    /// The death of process `pid` from its wait status, with `connected` subscribers; reads
    /// the kernel log (`dmesg`) for an OOM kill of `pid`.
    pub(crate) fn from_status(pid: u32, status: ExitStatus, connected: u64) -> Self {
        let log = std::process::Command::new("dmesg")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        ServerDeath {
            exit_code: status.code(),
            signal: status.signal(),
            oom: log.as_deref().and_then(|l| oom_line(l, pid)),
            log_readable: log.is_some(),
            connected,
        }
    }

    /// One text line: `server:    DIED signal 9 (OOM kill: ...) with N connected`.
    pub(crate) fn text(&self) -> String {
        let mut s = String::from("server:    DIED ");
        match (self.exit_code, self.signal) {
            (Some(c), _) => {
                let _ = write!(s, "exit status {c}");
            }
            (None, Some(sig)) => {
                let _ = write!(s, "signal {sig}");
            }
            (None, None) => s.push_str("(status unknown)"),
        }
        match (&self.oom, self.log_readable) {
            (Some(l), _) => {
                let _ = write!(s, ", OOM kill in the kernel log: {l}");
            }
            (None, true) => s.push_str(", no OOM kill in the kernel log"),
            (None, false) => s.push_str(", kernel log not readable"),
        }
        let _ = write!(s, "; {} subscribers connected", self.connected);
        s
    }

    /// The JSON object: `{"exit_code":N|null,"signal":N|null,"oom":"..."|null,
    /// "log_readable":bool,"connected":N}`.
    pub(crate) fn json(&self) -> String {
        let opt = |v: Option<i32>| v.map_or("null".to_string(), |n| n.to_string());
        format!(
            "{{\"exit_code\":{},\"signal\":{},\"oom\":{},\"log_readable\":{},\"connected\":{}}}",
            opt(self.exit_code),
            opt(self.signal),
            self.oom.as_deref().map_or("null".into(), json_str),
            self.log_readable,
            self.connected
        )
    }
}

/// The last kernel log line reporting an OOM kill of `pid` (`Killed process PID (...)` or
/// `oom-kill:...,pid=PID,`), trimmed.
pub(crate) fn oom_line(log: &str, pid: u32) -> Option<String> {
    let killed = format!("Killed process {pid} ");
    let task = format!(",pid={pid},");
    log.lines()
        .rev()
        .find(|l| l.contains(&killed) || (l.contains("oom-kill:") && l.contains(&task)))
        .map(|l| l.trim().to_string())
}
