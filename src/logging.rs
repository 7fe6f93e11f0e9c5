//! Log output: tracing-subscriber on stderr, the level from `RUST_LOG` (default `info`), as
//! text or as JSON lines (`--log-format`). The data path logs nothing per connection or per
//! message at `info` and above: such lines (a refused request's head) are `debug`.

use crate::config::LogFormat;

/// Installs the process's subscriber. `Json`: one object a line with `timestamp`, `level`,
/// `target` and `fields` (its `message` among them), tracing-subscriber's JSON format.
/// Call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}
