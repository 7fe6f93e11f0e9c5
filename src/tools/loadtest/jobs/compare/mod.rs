//! `uring-comet loadtest compare`: the same scenario ([`scenario`]: idle memory, one message
//! each, saturation, close) on several servers, then one table. `--protocol` picks the stream
//! uring-comet's subscribers open: the seed's chunked `/test/`, or SSE or WebSocket on `/sub/`.
//!
//! 1. Each backend of uring-comet (`--backends`), one after the other, each a fresh child
//!    server.
//! 2. The external server, if given (`--pid`, URL templates: nchan or any peer).
//! 3. The host's delivery ceiling ([`ceiling`]), unless `--no-ceiling`.
//! 4. The report ([`CompareReport`]: table, or `--json`), then the verdict.

pub(crate) mod ceiling;
pub(crate) mod scenario;

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use super::halves::check_fd_limit;
use crate::tools::duration::parse_secs;
use crate::tools::loadtest::cli::{ConnectFlags, ServerFlags};
use crate::tools::loadtest::host::child::ServerGuard;
use crate::tools::loadtest::host::procmem::ProcSet;
use crate::tools::loadtest::report::compare::{CompareReport, Row};
use crate::tools::loadtest::wire::framing::Framing;
use crate::tools::loadtest::wire::url::UrlTemplate;
use scenario::{Settings, Target};

/// The stream uring-comet's subscribers open (`--protocol`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// `GET /test/<id>`: the seed's chunked stream, one `Recvd msg #N: '...'` chunk each.
    #[default]
    Chunked,
    /// `GET /sub/<id>` with `Accept: text/event-stream`: server-sent events, chunked.
    Sse,
    /// `GET /sub/<id>` upgraded to WebSocket: one text frame each.
    Ws,
}

impl Protocol {
    /// The subscriber path (with `{id}`) and how its stream is framed.
    fn path_and_framing(self) -> (&'static str, Framing) {
        match self {
            Protocol::Chunked => ("/test/{id}", Framing::Seed),
            Protocol::Sse => ("/sub/{id}", Framing::Sse),
            Protocol::Ws => ("/sub/{id}", Framing::Ws),
        }
    }

    /// The name on the command line.
    fn name(self) -> &'static str {
        match self {
            Protocol::Chunked => "chunked",
            Protocol::Sse => "sse",
            Protocol::Ws => "ws",
        }
    }
}

/// Flags of `uring-comet loadtest compare`.
#[derive(Args, Debug)]
#[command(
    mut_arg("conns", |a| a.default_value("15000").help("Idle subscriber connections, ids 1..=conns")),
    mut_arg("connect_rate", |a| a.default_value("20000")
        .help("Subscriber connects started per second (the measured rate may be lower)")),
    mut_arg("max_connecting", |a| a
        .help("Most subscriber connects in flight (sent, no response head yet) at once")),
    mut_arg("shards", |a| a
        .help("Shards for the child servers (their `--shards`); default: the server's own")),
    mut_arg("server_args", |a| a.help(
        "Any other flag for the child servers, repeatable, e.g. `--server-arg=--placement=accept`"
    )),
    mut_arg("server_log", |a| a
        .help("Write each child server's stderr to FILE.<backend> instead of ours")),
)]
pub struct CompareArgs {
    /// uring-comet backends to measure, comma-separated (`uring`, `epoll`, `auto`), each on a
    /// fresh child server; `none` to measure only the external server.
    #[arg(long, default_value = "uring,epoll")]
    pub backends: String,
    /// The stream uring-comet's subscribers open: `chunked` (`/test/<id>`, the seed's), `sse`
    /// or `ws` (`/sub/<id>`). The external server's is `--stream`.
    #[arg(long, value_enum, default_value_t = Protocol::Chunked)]
    pub protocol: Protocol,
    /// Idle subscribers connecting.
    #[command(flatten)]
    pub connect: ConnectFlags,
    /// Length of the saturation window (`10`, `10s`, `1m`).
    #[arg(long, default_value = "10", value_parser = parse_secs)]
    pub saturate_secs: f64,
    /// Publisher connections (pipelined keep-alive).
    #[arg(long, default_value_t = 8)]
    pub publishers: usize,
    /// Publish requests in flight per publisher connection.
    #[arg(long, default_value_t = 64)]
    pub depth: usize,
    /// Pause after every subscriber closed, before the last memory reading (`3s`).
    #[arg(long, default_value = "3", value_parser = parse_secs)]
    pub close_wait: f64,
    /// The child servers, one per backend.
    #[command(flatten)]
    pub server: ServerFlags,
    /// External server to measure as well: its pid, repeatable; descendants (nginx workers)
    /// are included. Memory is then summed over the processes (PSS when there are several).
    #[arg(long = "pid")]
    pub pids: Vec<u32>,
    /// External server's subscriber URL, e.g. `http://127.0.0.1:8081/sub/{id}`.
    #[arg(long)]
    pub url_template: Option<String>,
    /// External server's publish URL, e.g. `http://127.0.0.1:8081/pub/{id}`; any 2xx answer
    /// counts as accepted.
    #[arg(long)]
    pub publish_url_template: Option<String>,
    /// The external server's name in the table.
    #[arg(long, default_value = "external")]
    pub name: String,
    /// How the external server frames messages: `sse`, `raw`, `chunked`, `seed` or `ws`.
    #[arg(long, value_enum, default_value_t = Framing::Sse)]
    pub stream: Framing,
    /// Measure the delivery ceiling (deliver-ceiling) too; on by default when the tool is found.
    #[arg(long, conflicts_with = "no_ceiling")]
    pub ceiling: bool,
    /// Do not measure the delivery ceiling.
    #[arg(long)]
    pub no_ceiling: bool,
    /// deliver-ceiling's folder [default: ../shared/tools/deliver-ceiling beside the repository].
    #[arg(long)]
    pub ceiling_dir: Option<PathBuf>,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Source addresses (127.0.0.1, .2, ...) for subscribers; 0: one per 12,000 connections.
    #[arg(long, default_value_t = 0)]
    pub source_addrs: u32,
}

/// Runs `loadtest compare`; fails if a server could not be measured, a message of the
/// one-each phase was lost, or a bad chunk arrived (after printing what was measured).
pub(crate) fn run(a: CompareArgs) -> Result<()> {
    let backends = parse_backends(&a.backends)?;
    let external = external_target(&a)?;
    if backends.is_empty() && external.is_none() {
        bail!("nothing to measure: --backends none and no --pid/--url-template");
    }
    let (settings, ceiling_dir) = validate(&a)?;
    let load_before = loadavg();
    let mut rows: Vec<Row> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    // 1. Each backend on a fresh child server.
    for backend in &backends {
        let measured = measure_backend(&a, &settings, backend);
        record(measured, backend, &mut rows, &mut failures);
    }
    // 2. The external server.
    if let Some(target) = external {
        let measured = scenario::measure(&target, &settings, &mut || true);
        record(measured, &target.label, &mut rows, &mut failures);
    }
    // 3. The host's delivery ceiling.
    let ceiling = ceiling_dir.and_then(|dir| {
        eprintln!(
            "compare: delivery ceiling: deliver-ceiling in {}",
            dir.display()
        );
        let c = ceiling::build(&dir)
            .and_then(|bin| ceiling::run(&bin, a.connect.conns, a.saturate_secs.round() as u64));
        c.map_err(|e| failures.push(format!("ceiling: {e:#}"))).ok()
    });
    // 4. The table, then the verdict.
    let report = CompareReport {
        conns: a.connect.conns,
        protocol: a.protocol.name(),
        saturate_secs: a.saturate_secs,
        publishers: a.publishers,
        depth: a.depth,
        rows,
        ceiling,
        load_before,
        load_after: loadavg(),
        failures,
    };
    if a.json {
        // The table also goes to stderr, so that a recorded run keeps it beside the JSON.
        eprint!("{}", report.text());
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    let mut failures = report.failures;
    for r in &report.rows {
        if r.one_msg[2] > 0 || r.one_msg[0] < r.conns || r.bad_chunks > 0 {
            failures.push(format!(
                "{}: {} lost, {} of {} accepted, {} bad chunks",
                r.label, r.one_msg[2], r.one_msg[0], r.conns, r.bad_chunks
            ));
        }
    }
    if !failures.is_empty() {
        bail!("compare: {}", failures.join("; "));
    }
    Ok(())
}

/// Rejects flags the job cannot run with; the scenario's settings and deliver-ceiling's
/// folder (`None`: no ceiling). Errors: `--ceiling` without the tool.
fn validate(a: &CompareArgs) -> Result<(Settings, Option<PathBuf>)> {
    if !(a.connect.connect_rate > 0.0 && a.saturate_secs > 0.0)
        || a.connect.conns == 0
        || a.publishers == 0
    {
        bail!("--conns, --connect-rate, --saturate-secs and --publishers must be positive");
    }
    check_fd_limit(a.connect.conns + a.publishers as u64 * 2)?;
    let ceiling_dir = match (
        a.no_ceiling,
        a.ceiling_dir.clone().or_else(ceiling::default_dir),
    ) {
        (true, _) => None,
        (false, Some(d)) => Some(d),
        (false, None) if a.ceiling => {
            bail!("--ceiling: deliver-ceiling not found; give --ceiling-dir")
        }
        (false, None) => {
            eprintln!(
                "note: deliver-ceiling not found beside the repository or the working directory \
                 (../shared/tools/deliver-ceiling): the ceiling row and columns stay empty; \
                 give --ceiling-dir DIR to measure it"
            );
            None
        }
    };
    let settings = Settings {
        conns: a.connect.conns,
        connect_rate: a.connect.connect_rate,
        max_connecting: a.connect.max_connecting,
        saturate: std::time::Duration::from_secs_f64(a.saturate_secs),
        publishers: a.publishers,
        depth: a.depth.max(1),
        close_wait: std::time::Duration::from_secs_f64(a.close_wait),
        source_addrs: a.source_addrs,
    };
    Ok((settings, ceiling_dir))
}

/// The scenario on a fresh child server with `--backend backend` (its log, if asked for,
/// `FILE.<backend>`); the server is killed when done.
fn measure_backend(a: &CompareArgs, settings: &Settings, backend: &str) -> Result<Row> {
    let (bin, args) = a
        .server
        .command(vec!["--backend".to_string(), backend.to_string()], None)?;
    let log = a
        .server
        .server_log
        .as_ref()
        .map(|p| p.with_extension(backend));
    let (path, framing) = a.protocol.path_and_framing();
    let mut server = ServerGuard::start(&bin, &args, log.as_ref())?;
    eprintln!(
        "compare: {backend}: server pid {}, subscribers {} ({})",
        server.pid,
        path,
        a.protocol.name()
    );
    let target = Target {
        label: backend.to_string(),
        procs: ProcSet {
            roots: vec![server.pid],
        },
        sub_url: UrlTemplate::local(server.sub_addr, path)?,
        pub_url: UrlTemplate::local(server.pub_addr, "/send/{id}")?,
        framing,
        ours: true,
    };
    scenario::measure(&target, settings, &mut || server.alive())
}

/// Keeps a row, or the reason there is none.
fn record(measured: Result<Row>, label: &str, rows: &mut Vec<Row>, failures: &mut Vec<String>) {
    match measured {
        Ok(r) => rows.push(r),
        Err(e) => {
            eprintln!("compare: {label}: {e:#}");
            failures.push(format!("{label}: {e:#}"));
        }
    }
}

/// `uring,epoll` -> ["uring", "epoll"]; `none` or empty -> [].
fn parse_backends(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for b in s
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty() && *b != "none")
    {
        if !matches!(b, "uring" | "epoll" | "auto") {
            bail!("--backends: unknown backend {b:?} (uring, epoll, auto, none)");
        }
        out.push(b.to_string());
    }
    Ok(out)
}

/// The external server given by `--pid` and the URL templates, if any.
fn external_target(a: &CompareArgs) -> Result<Option<Target>> {
    match (&a.url_template, &a.publish_url_template, a.pids.is_empty()) {
        (None, None, true) => Ok(None),
        (Some(sub), Some(publ), false) => Ok(Some(Target {
            label: a.name.clone(),
            procs: ProcSet {
                roots: a.pids.clone(),
            },
            sub_url: UrlTemplate::parse(sub)?,
            pub_url: UrlTemplate::parse(publ)?,
            framing: a.stream,
            ours: false,
        })),
        _ => bail!("an external server needs --pid, --url-template and --publish-url-template"),
    }
}

/// The first three fields of /proc/loadavg.
fn loadavg() -> String {
    let t = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    t.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::{loadavg, parse_backends, Framing, Protocol};

    #[test]
    fn backends_list() {
        assert_eq!(
            parse_backends("uring,epoll").unwrap(),
            vec!["uring", "epoll"]
        );
        assert!(parse_backends("none").unwrap().is_empty());
        assert!(parse_backends("").unwrap().is_empty());
        assert!(parse_backends("uring,kqueue").is_err());
        assert_eq!(loadavg().split(' ').count(), 3);
    }

    #[test]
    fn protocols() {
        use clap::ValueEnum;
        for p in [Protocol::Chunked, Protocol::Sse, Protocol::Ws] {
            assert_eq!(Protocol::from_str(p.name(), false), Ok(p));
        }
        assert_eq!(
            Protocol::Chunked.path_and_framing(),
            ("/test/{id}", Framing::Seed)
        );
        assert_eq!(Protocol::Ws.path_and_framing(), ("/sub/{id}", Framing::Ws));
    }
}
