//! Choosing the backend at start: probe io_uring, fall back to epoll under `--backend auto`.
//!
//! The probe sets up a small ring and asks the kernel which opcodes it knows
//! (`io_uring_register(2)` `IORING_REGISTER_PROBE`); every opcode the shard submits must be
//! there. [`DISABLE_ENV`] makes the probe fail on purpose, so the fallback can be tested on
//! a kernel that has io_uring.

use io_uring::{opcode, IoUring};

use crate::config::Backend;

/// Environment variable that makes [`probe_uring`] fail, to exercise the epoll fallback.
pub const DISABLE_ENV: &str = "URING_COMET_DISABLE_URING";

/// Checks that io_uring can be used here: a ring can be set up and the kernel knows every
/// opcode the shard submits. Errors: the cause, in words (sysctl, seccomp, old kernel, or
/// [`DISABLE_ENV`] set).
pub fn probe_uring() -> Result<(), String> {
    if std::env::var_os(DISABLE_ENV).is_some() {
        return Err(format!(
            "disabled by the {DISABLE_ENV} environment variable"
        ));
    }
    let ring = IoUring::new(8).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOSYS) => format!("io_uring_setup: {e}: the kernel has no io_uring, or a seccomp profile (e.g. Docker's default) blocks it"),
        Some(libc::EPERM) => format!("io_uring_setup: {e}: disabled by sysctl kernel.io_uring_disabled, or not permitted for this user or container"),
        _ => format!("io_uring_setup: {e}"),
    })?;
    let mut p = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(|e| format!("io_uring probe: {e}"))?;
    for (code, name) in [
        (opcode::Accept::CODE, "ACCEPT"),
        (opcode::Recv::CODE, "RECV"),
        (opcode::Send::CODE, "SEND"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
        (opcode::ProvideBuffers::CODE, "PROVIDE_BUFFERS"),
        (opcode::Shutdown::CODE, "SHUTDOWN"),
        (
            opcode::SendZc::CODE,
            "SEND_ZC (Linux 6.0, for multishot accept and cancel-by-fd too)",
        ),
    ] {
        if !p.is_supported(code) {
            return Err(format!(
                "the kernel lacks IORING_OP_{name}: Linux 6.0 or later is needed"
            ));
        }
    }
    Ok(())
}

/// The backend the shards run for `--backend requested`: `Uring` or `Epoll`, never `Auto`.
/// `auto` falls back to epoll with one warning naming the cause. Errors: `--backend uring`
/// where the probe fails (the message says how to allow io_uring or to pick epoll).
pub fn choose_backend(requested: Backend) -> anyhow::Result<Backend> {
    // Probe on a thread of its own: a thread that has used io_uring gets io_uring task work
    // (TIF_NOTIFY_SIGNAL) even after its ring is gone, and a blocking socket read with
    // SO_RCVTIMEO in that thread then fails with EINTR. The caller's thread stays clean.
    let probed = std::thread::spawn(probe_uring)
        .join()
        .unwrap_or_else(|_| Err("the io_uring probe panicked".into()));
    pick(requested, probed)
}

/// The backend for `--backend requested` given the probe's answer (`Err`: why io_uring
/// cannot be used); see [`choose_backend`].
fn pick(requested: Backend, probed: Result<(), String>) -> anyhow::Result<Backend> {
    Ok(match (requested, probed) {
        (Backend::Epoll, _) => Backend::Epoll,
        (_, Ok(())) => Backend::Uring,
        (Backend::Auto, Err(why)) => {
            tracing::warn!("io_uring unavailable ({why}); using the epoll backend");
            Backend::Epoll
        }
        (_, Err(why)) => anyhow::bail!(
            "--backend uring: io_uring unavailable: {why}. Fix: allow io_uring (sysctl kernel.io_uring_disabled=0; a seccomp profile that permits io_uring_setup/io_uring_enter/io_uring_register; Linux 6.0 or later), or run with --backend epoll"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::{pick, probe_uring, DISABLE_ENV};
    use crate::config::Backend;

    #[test]
    fn disable_env_makes_the_probe_fail() {
        // In a child process (this test binary running only `probe_in_child`), so that no
        // other test sees the variable.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "driver::probe::tests::probe_in_child"])
            .args(["--ignored", "--nocapture", "--test-threads=1"])
            .env(DISABLE_ENV, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        let want = format!("probe: Err(\"disabled by the {DISABLE_ENV} environment variable\")");
        assert!(stdout.contains(&want), "{stdout}");
    }

    #[test]
    #[ignore = "run by disable_env_makes_the_probe_fail, in a child process with the variable set"]
    fn probe_in_child() {
        println!("probe: {:?}", probe_uring());
    }

    #[test]
    fn epoll_when_asked_whatever_the_probe_says() {
        assert_eq!(pick(Backend::Epoll, Ok(())).unwrap(), Backend::Epoll);
        assert_eq!(
            pick(Backend::Epoll, Err("no".into())).unwrap(),
            Backend::Epoll
        );
    }

    #[test]
    fn auto_takes_uring_if_it_probes_else_falls_back() {
        assert_eq!(pick(Backend::Auto, Ok(())).unwrap(), Backend::Uring);
        assert_eq!(
            pick(Backend::Auto, Err("no".into())).unwrap(),
            Backend::Epoll
        );
    }

    #[test]
    fn uring_asked_but_unavailable_is_an_error_naming_cause_and_fix() {
        assert_eq!(pick(Backend::Uring, Ok(())).unwrap(), Backend::Uring);
        let e = pick(Backend::Uring, Err("the cause".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the cause") && e.contains("--backend epoll"),
            "{e}"
        );
    }
}
