//! Value enums of `serve` flags (`--log-format`, `--cpu-affinity`), re-exported by
//! [`crate::config`], and the byte-count parser of `--history-memory`.

/// Parses a byte count (`parse-size`: `256MiB`, `1 GiB`, `64KB`, `100000`). Errors: the
/// crate's message.
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    parse_size::parse_size(s).map_err(|e| format!("bad size {s:?}: {e}"))
}

/// The format of log lines (`--log-format`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (colours on a terminal).
    Text,
    /// JSON lines (tracing-subscriber's JSON formatter).
    Json,
}

/// Whether shard threads are pinned to CPUs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuAffinity {
    /// Shard i on the i-th allowed CPU.
    Auto,
    /// No pinning.
    Off,
}
