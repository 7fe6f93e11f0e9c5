//! `serve --config FILE` (issue 16): every `serve` flag as a TOML key, named by its long name;
//! a file setting every flag gives exactly those settings; flags and `UC_*` environment
//! variables override the file; a key the server does not know is refused, named; the
//! shipped example (kernel-tuning/uring-comet.toml) names every flag and parses.

mod common;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Args;
use common::*;
use uring_comet::config::file::parse_serve;
use uring_comet::config::{Backend, CpuAffinity, LogFormat, Placement, ServeArgs};

/// Every key of the file below, and a value that is not the flag's default.
const EVERY_FLAG: &str = r#"
listen = "127.0.0.1:9000"
publish-listen = "127.0.0.1:9001"
shards = 3
max-conns = 1234
max-pending-bytes = 4096
sndbuf = 16384
placement = "accept"
heartbeat = 7
send-timeout = 9
head-timeout = 11
publish-token = "tok"
cors-origin = "https://example.org"
backend = "epoll"
cluster = "redis://127.0.0.1:6390/2"
cluster-buckets = 64
cluster-mode = "affine"
cluster-nodes = 2
cluster-node-index = 1
cluster-node-urls = "http://10.0.0.1:80,http://10.0.0.2:80"
friends = "/nonexistent-dir/friends.txt"
directed = true
strict = true
cpu-affinity = "auto"
history = 5
history-ttl = "90s"
history-memory = "1MiB"
poll-timeout = "250ms"
metrics-listen = "127.0.0.1:9100"
log-format = "json"
drain-period = "3s"
takeover = true
sub-jwt-secret-file = "SECRET_FILE"
sub-jwks-file = "JWKS_FILE"
sub-jwt-aud = "comet"
sub-jwt-iss = "auth.example"
sub-jwt-leeway = "7s"
sub-token-cookie = "uc_token"
zerocopy-min-bytes = 8192
presence-events = true
presence-debounce = "3s"
presence-log = 1000
friends-presence = true
max-conns-per-ip = 17
no-idle-poll = true
"#;

/// A file in the test's own temporary directory.
fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("uc-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `uring-comet serve ARGS...`.
fn argv(args: &[&str]) -> Vec<OsString> {
    ["uring-comet", "serve"]
        .iter()
        .chain(args)
        .map(Into::into)
        .collect()
}

/// Every `serve` flag's long name but `config`'s own.
fn serve_flags() -> Vec<String> {
    ServeArgs::augment_args(clap::Command::new("serve"))
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .filter(|l| l != "config")
        .collect()
}

/// The keys of a TOML text.
fn keys(text: &str) -> Vec<String> {
    let t: toml::Table = toml::from_str(text).unwrap();
    t.keys().cloned().collect()
}

#[test]
fn a_file_sets_every_flag() {
    for var in ["UC_PUBLISH_TOKEN", "UC_CLUSTER", "UC_CONFIG"] {
        assert!(
            std::env::var_os(var).is_none(),
            "unset {var} to run this test"
        );
    }
    let mut want = serve_flags();
    let mut have = keys(EVERY_FLAG);
    want.sort();
    have.sort();
    assert_eq!(have, want, "the test file must set every serve flag");
    // The key files a tokens-on server reads at start.
    let secret = temp_file("secret.txt", "s3cret\n");
    let es = uring_comet::auth::sign::Signer::generate("es256", "k1").unwrap();
    let jwks = temp_file("jwks.json", std::str::from_utf8(&es.server_file).unwrap());
    let text = EVERY_FLAG
        .replace("SECRET_FILE", secret.to_str().unwrap())
        .replace("JWKS_FILE", jwks.to_str().unwrap());
    let path = temp_file("every.toml", &text);
    let args = parse_serve(argv(&["--config", path.to_str().unwrap()])).unwrap();
    assert_eq!(args.log_format, LogFormat::Json);
    assert_eq!(args.config.as_deref(), Some(path.as_path()));
    let c = args.into_config().unwrap();
    assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(c.publish_listen, "127.0.0.1:9001".parse().unwrap());
    assert_eq!(
        (c.shards, c.max_conns, c.max_pending_bytes, c.sndbuf),
        (3, 1234, 4096, 16384)
    );
    assert_eq!(c.placement, Placement::Accept);
    assert_eq!(
        (c.heartbeat_s, c.send_timeout_s, c.head_timeout_s),
        (7, 9, 11)
    );
    assert_eq!(c.publish_token.as_deref(), Some("tok"));
    assert_eq!(c.cors_origin, "https://example.org");
    assert_eq!(c.backend, Backend::Epoll);
    let cl = c.cluster.as_ref().expect("cluster");
    assert_eq!(
        (cl.url.as_str(), cl.buckets, cl.db),
        ("redis://127.0.0.1:6390/2", 64, 2)
    );
    let aff = cl.affine.as_ref().expect("affine mode");
    assert_eq!((aff.index, aff.urls.len()), (1, 2));
    assert_eq!(
        c.friends.as_deref(),
        Some(std::path::Path::new("/nonexistent-dir/friends.txt"))
    );
    assert!(c.friends_directed && c.friends_strict);
    assert_eq!(c.cpu_affinity, CpuAffinity::Auto);
    assert_eq!(
        (c.history.max_msgs, c.history.ttl_ms, c.history.memory),
        (5, 90_000, 1 << 20)
    );
    assert_eq!(c.poll_timeout_ms, 250);
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9100".parse().unwrap()));
    assert_eq!((c.drain_period_ms, c.takeover), (3_000, true));
    let v = c.sub_auth.as_ref().expect("subscriber tokens on");
    assert_eq!((v.leeway_s(), v.cookie()), (7, Some("uc_token")));
    assert_eq!(c.zerocopy_min_bytes, 8192);
    assert_eq!(c.admin.max_conns_per_ip, 17);
    assert!(!c.idle_poll);
}

#[test]
fn flags_win_over_the_file() {
    let path = temp_file(
        "flags.toml",
        "max-conns = 5\nheartbeat = 3\ndirected = false\n",
    );
    let p = path.to_str().unwrap();
    let c = parse_serve(argv(&["--config", p, "--max-conns", "7"])).unwrap();
    assert_eq!((c.max_conns, c.heartbeat), (7, 3));
    // Before --config on the line too.
    let c = parse_serve(argv(&["--heartbeat=4", "--config", p])).unwrap();
    assert_eq!((c.max_conns, c.heartbeat), (5, 4));
}

#[test]
fn an_unknown_key_is_refused_by_name() {
    let path = temp_file("unknown.toml", "max-conns = 5\nmax-conn = 6\n");
    let e = parse_serve(argv(&["--config", path.to_str().unwrap()])).unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("unknown key `max-conn`") && e.contains("unknown.toml"),
        "{e}"
    );
    let path = temp_file("nested.toml", "config = \"other.toml\"\n");
    let e = format!(
        "{:#}",
        parse_serve(argv(&["--config", path.to_str().unwrap()])).unwrap_err()
    );
    assert!(e.contains("unknown key `config`"), "{e}");
    let path = temp_file("badbool.toml", "strict = \"yes\"\n");
    let e = format!(
        "{:#}",
        parse_serve(argv(&["--config", path.to_str().unwrap()])).unwrap_err()
    );
    assert!(e.contains("`strict` must be true or false"), "{e}");
}

#[test]
fn the_shipped_example_names_every_flag_and_parses() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("kernel-tuning/uring-comet.toml")).unwrap();
    assert!(
        keys(&text).is_empty(),
        "as shipped, every line is commented out"
    );
    let uncommented: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut have = keys(&uncommented);
    let mut want = serve_flags();
    have.sort();
    want.sort();
    assert_eq!(
        have, want,
        "kernel-tuning/uring-comet.toml names every serve flag once"
    );
    let path = temp_file("shipped.toml", &uncommented);
    let args = parse_serve(argv(&["--config", path.to_str().unwrap()])).unwrap();
    args.into_config().expect("the example's values are valid");
}

both_backends! {
    /// The binary: a file's settings apply, `UC_PUBLISH_TOKEN` overrides the file's token,
    /// and an unknown key stops the start (exit non-zero, the key named on stderr).
    fn the_binary_reads_the_file() {
        let path = temp_file(&format!("bin-{}.toml", backend()), "publish-token = \"from-file\"\nhistory = 0\n");
        let p = path.to_str().unwrap().to_string();
        let srv = Serve::new().args(["--config", &p]).env("UC_PUBLISH_TOKEN", "from-env").spawn();
        assert_eq!(get(srv.publish, "/stats", Some("from-file")).0.status, 401);
        assert_eq!(get(srv.publish, "/stats", Some("from-env")).0.status, 200);
        drop(srv);
        let srv = Serve::new().args(["--config", &p]).spawn();
        assert_eq!(get(srv.publish, "/stats", Some("from-file")).0.status, 200);
        drop(srv);
        let bad = temp_file(&format!("bad-{}.toml", backend()), "hartbeat = 5\n");
        let out = Serve::new().args(["--config", bad.to_str().unwrap()]).command().output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("unknown key `hartbeat`"), "{err}");
    }
}
