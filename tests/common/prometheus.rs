//! A real Prometheus server for the tests: Debian's `prometheus` (installed by
//! `scripts/test-deps.sh`), its config and TSDB in a temporary directory of its own,
//! listening on a free loopback port (Prometheus cannot take port 0: a port is found by
//! binding 127.0.0.1:0 and closing it), scraping one target every second; ended by pid
//! (`Child::kill`) and reaped on drop, its directory removed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::client::request_expect_close;
use super::redis::free_port;
use super::wait_until;

/// A running Prometheus.
pub(crate) struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `http://TARGET/metrics` every second (with a bearer token
    /// if given) and waits (30 s at most) until it is ready.
    pub(crate) fn scraping(target: SocketAddr, token: Option<&str>) -> Prometheus {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("uc-prom-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let auth = token.map_or(String::new(), |t| {
            format!("    authorization:\n      credentials: {t}\n")
        });
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: uring-comet\n    scrape_interval: 1s\n{auth}    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus not found: scripts/test-deps.sh installs Debian's `prometheus`");
        let p = Prometheus { child, port, dir };
        let ready = wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(p.addr()).is_ok() && p.get("/-/ready").0 == 200
        });
        assert!(ready, "prometheus on port {port} not ready within 30 s");
        p
    }

    /// Its HTTP address.
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `GET path`: status and body.
    fn get(&self, path: &str) -> (u16, String) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let (head, body, _) = request_expect_close(self.addr(), req.as_bytes());
        (head.status, String::from_utf8_lossy(&body).into_owned())
    }

    /// The value of an instant PromQL query (`/api/v1/query`) whose result is one sample,
    /// or None while it has none (no scrape yet).
    pub(crate) fn query_one(&self, promql: &str) -> Option<f64> {
        let q: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) = self.get(&format!("/api/v1/query?query={q}"));
        assert_eq!(status, 200, "query {promql}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("query answer is JSON");
        assert_eq!(json["status"], "success", "{body}");
        let result = json["data"]["result"].as_array()?.first()?.clone();
        result["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
