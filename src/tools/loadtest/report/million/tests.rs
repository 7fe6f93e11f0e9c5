//! Tests of the million report: the verdict, the per-connection figures and the JSON.

use super::MillionReport;

#[test]
fn verdict_and_figures() {
    let mut r = MillionReport {
        conns: 10,
        connected: 10,
        published: 10,
        exact: 10,
        connect_s: 0.5,
        server_rss_idle: 1000,
        server_rss_loaded: 1900,
        lat: vec![0, 0, 5, 4, 1],
        ..MillionReport::default()
    };
    assert!(r.passed());
    assert_eq!(r.connect_rate(), 20.0);
    assert_eq!(r.server_rss_per_conn(), 90.0);
    assert_eq!(r.lat_quantile(0.5), 4);
    assert_eq!(r.lat_quantile(0.99), 16);
    assert_eq!(r.lat_quantile(1.0), 16);
    let j = r.json();
    assert!(j.contains("\"passed\":true") && !j.contains('\n'), "{j}");
    assert!(r.text().ends_with("PASS (no loss)"));
    r.missing = 1;
    r.exact = 9;
    assert!(!r.passed());
    assert!(r.json().contains("\"missing\":1"));
}
