//! Tests of the compare table, the efficiency lines and the JSON.

use super::{
    efficiency, json, table, thousands, uring_vs_epoll, Ceiling, KernelMem, MemReading, Row,
};

fn mem(rss: u64, pss: u64) -> MemReading {
    MemReading { rss, pss, procs: 1 }
}

fn row(label: &str, cpu_s: f64) -> Row {
    let kernel = |slab| KernelMem {
        slab,
        ..KernelMem::default()
    };
    Row {
        label: label.into(),
        conns: 10_000,
        procs: 1,
        idle: mem(8 << 20, 7 << 20),
        loaded: mem((8 << 20) + 700_000, 0),
        after_msg: mem((8 << 20) + 900_000, 0),
        after_close: mem((8 << 20) + (8 << 20) / 100, 0),
        kernel: [kernel(1_000_000), kernel(91_000_000), kernel(1_500_000)],
        connect_s: 2.0,
        one_msg: [10_000, 10_000, 0],
        sat_secs: 10.0,
        sat_delivered: 1_500_000,
        sat_cpu_s: cpu_s,
        sat_accepted: 1_500_000,
        latency_us: [850, 12_345],
        ..Row::default()
    }
}

fn ceiling() -> Ceiling {
    Ceiling {
        n: 10_000,
        deliv_mps: 200_000.0,
        send_us: 4.0,
        recv_us: 4.5,
        row: "ROW n=10000".into(),
    }
}

#[test]
fn figures() {
    let r = row("uring", 12.0);
    assert_eq!(r.per_conn(&r.loaded), 70.0);
    assert_eq!(r.per_conn(&r.after_msg), 90.0);
    assert_eq!(r.kernel_per_conn(), 9_000.0);
    assert_eq!(r.connect_rate(), 5_000.0);
    assert_eq!(r.msgs_per_s(), 150_000.0);
    assert_eq!(r.cpu_us_per_msg(), 8.0);
    assert!((r.close_vs_idle_pct() - 1.0).abs() < 1e-3);
    // Several processes: PSS is the basis.
    let multi = Row { procs: 3, ..r };
    assert_eq!(multi.mem(&multi.idle), 7 << 20);
}

#[test]
fn table_lines() {
    let rows = [row("uring", 12.0), row("epoll", 16.0)];
    let t = table(&rows, Some(&ceiling()));
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 5, "{t}");
    assert!(lines[0].starts_with("| server | conns | RSS idle |"));
    assert_eq!(
        lines[2],
        "| uring | 10,000 | 8.0 MiB | 70 B | 90 B | 8.1 MiB (+1.0%) | 9000 | 5,000 | 150,000 | 75% | 8.00 | 2.00x | 850 us / 12.3 ms |"
    );
    assert!(lines[4].starts_with("| ceiling: deliver-ceiling"));
    assert!(lines[4].contains("| 200,000 | 100% | 4.00 (sender) |"));
    let no_ceiling = table(&rows[..1], None);
    assert!(no_ceiling
        .lines()
        .nth(2)
        .unwrap()
        .contains("| - | 8.00 | - |"));
    let e = efficiency(&rows);
    assert!(
        e.contains("uring: 125,000 msgs per server CPU-second"),
        "{e}"
    );
    assert!(
        e.contains("io_uring vs epoll, msgs per server CPU-second: 1.33x"),
        "{e}"
    );
    assert_eq!(uring_vs_epoll(&rows[..1]), None);
}

#[test]
fn json_shape() {
    let rows = [row("uring", 12.0), row("nchan \"x\"", 16.0)];
    let j = json(&rows, Some(&ceiling()), &[("load", "0.5 0.4".into())]);
    assert!(j.starts_with("{\"load\":\"0.5 0.4\",\"rows\":[{\"label\":\"uring\""));
    for key in [
        "\"per_conn_idle_bytes\":70.000",
        "\"slab_per_conn_bytes\":9000.000",
        "\"msgs_per_s\":150000.000",
        "\"of_ceiling\":0.750",
        "\"label\":\"nchan \\\"x\\\"\"",
        "\"ceiling\":{\"n\":10000",
        "\"uring_vs_epoll_msgs_per_cpu_s\":null}",
    ] {
        assert!(j.contains(key), "{key} missing from {j}");
    }
    assert!(!j.contains('\n'));
    let j = json(&rows[..1], None, &[]);
    assert!(j.contains("\"ceiling\":null") && j.contains("\"of_ceiling\":null"));
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1_234_567), "1,234,567");
}
