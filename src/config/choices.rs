//! Value enums of `serve` flags (`--log-format`, `--cpu-affinity`), re-exported by
//! [`crate::config`].

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
