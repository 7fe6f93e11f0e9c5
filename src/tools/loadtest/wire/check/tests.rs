//! Tests of the message format and the chunk checker.

use super::{format_body, parse_body, Bitmap, Checker};

fn chunk(n: u32, msg: &str) -> Vec<u8> {
    format!("Recvd msg #{n}: '{msg}'<br/>\n").into_bytes()
}

fn body(id: u64, seq: u64, t: u64) -> String {
    let mut v = Vec::new();
    format_body(&mut v, id, seq, t);
    String::from_utf8(v).unwrap()
}

#[test]
fn body_round_trip() {
    assert_eq!(body(7, 3, 1000), "7:3:1000");
    assert_eq!(parse_body(b"7:3:1000"), Some((7, 3, 1000)));
    assert_eq!(parse_body(b"7:3"), None);
    assert_eq!(parse_body(b"7:3:1:2"), None);
    assert_eq!(parse_body(b"7:x:1"), None);
    assert_eq!(parse_body(b"99999999999999999999999:1:1"), None);
}

#[test]
fn in_order_messages_pass_and_record_latency() {
    let mut c = Checker::new(true, 100);
    let mut n = 0;
    c.check(5, &mut n, &chunk(1, &body(5, 0, 1000)), 1500);
    c.check(5, &mut n, &chunk(2, &body(5, 1, 1000)), 2000);
    assert_eq!(c.counts.ok, 2);
    assert_eq!(c.counts.errors(), 0);
    assert_eq!(n, 2);
    assert_eq!(c.received.count(), 2);
    assert_eq!(c.latency_us.len(), 2);
    assert!(c.latency_us.max() >= 999 && c.latency_us.max() <= 1001);
}

#[test]
fn duplicate_gap_wrong_id_and_garbage_are_errors() {
    let mut c = Checker::new(true, 100);
    let mut n = 0;
    c.check(5, &mut n, &chunk(1, &body(5, 0, 10)), 20);
    c.check(5, &mut n, &chunk(2, &body(5, 0, 10)), 20); // same seq again
    assert_eq!(c.counts.duplicates, 1);
    c.check(5, &mut n, &chunk(4, &body(5, 1, 10)), 20); // #3 skipped
    assert_eq!(c.counts.out_of_order, 1);
    c.check(5, &mut n, &chunk(5, &body(6, 2, 10)), 20); // for id 6
    assert_eq!(c.counts.id_mismatch, 1);
    c.check(5, &mut n, b"Recvd msg #6: 'x'", 20); // wrapper cut short
    c.check(5, &mut n, &chunk(6, "hello"), 20); // not the test format
    c.check(5, &mut n, &chunk(7, &body(5, 100, 10)), 20); // seq never issued
    c.check(5, &mut n, &chunk(8, &body(5, 3, 30)), 20); // sent in the future
    assert_eq!(c.counts.garbled, 4);
    assert_eq!(c.counts.ok, 1);
    assert_eq!(c.counts.errors(), 7);
    assert_eq!(c.notes.len(), 5);
}

#[test]
fn lenient_mode_counts_foreign_messages() {
    let mut c = Checker::new(false, u64::MAX);
    let mut n = 0;
    c.check(1, &mut n, &chunk(1, "hello &amp; bye"), 5);
    c.check(1, &mut n, &chunk(2, &body(1, 9, 1)), 5);
    assert_eq!(c.counts.foreign, 1);
    assert_eq!(c.counts.ok, 1);
    assert_eq!(c.counts.errors(), 0);
}

#[test]
fn bitmap_counts_and_difference() {
    let mut sent = Bitmap::default();
    let mut got = Bitmap::default();
    for i in [0, 1, 63, 64, 200] {
        assert!(sent.insert(i));
    }
    assert!(!sent.insert(64));
    for i in [0, 63, 200, 500] {
        got.insert(i);
    }
    assert_eq!(sent.count(), 5);
    assert_eq!(sent.count_missing_from(&got), 2);
    assert_eq!(got.count_missing_from(&sent), 1);
}

#[test]
fn verbatim_messages_and_the_latency_window() {
    let mut c = Checker::new(true, 100);
    c.latency_from_seq = 10;
    c.check_message(5, body(5, 3, 1000).as_bytes(), 1500);
    c.check_message(5, body(5, 12, 1000).as_bytes(), 1700);
    c.check_message(5, body(6, 13, 1000).as_bytes(), 1700);
    c.check_message(5, b"hello", 1700);
    assert_eq!(c.counts.chunks, 4);
    assert_eq!(c.counts.ok, 2);
    assert_eq!(c.counts.id_mismatch, 1);
    assert_eq!(c.counts.garbled, 1);
    assert_eq!(c.received.count(), 2);
    // Only seq 12 is at or past the latency window's start.
    assert_eq!(c.latency_us.len(), 1);
    assert_eq!(c.latency_us.max(), 700);
}

#[test]
fn numbered_messages_check_their_number_then_their_body() {
    let mut c = Checker::new(true, 100);
    c.check_numbered(5, 4, 4, body(5, 0, 1000).as_bytes(), 1500);
    assert_eq!((c.counts.ok, c.counts.errors()), (1, 0));
    // A gap: out of order, and the message is not taken as received.
    c.check_numbered(5, 5, 7, body(5, 1, 1000).as_bytes(), 1500);
    assert_eq!((c.counts.out_of_order, c.received.count()), (1, 1));
    // The same message again under the right number: a duplicate.
    c.check_numbered(5, 5, 5, body(5, 0, 1000).as_bytes(), 1500);
    assert_eq!(c.counts.duplicates, 1);
    assert_eq!(c.counts.chunks, 3);
}

#[test]
fn one_id_mode_checks_order_not_ids_or_cross_connection_duplicates() {
    let mut c = Checker::new(true, 100);
    c.one_id = true;
    let (mut a, mut b) = (0, 0);
    // Two connections under one id both get seq 0 and 1, published to id 9.
    c.check(1, &mut a, &chunk(1, &body(9, 0, 1000)), 1500);
    c.check(2, &mut b, &chunk(1, &body(9, 0, 1000)), 1500);
    c.check(1, &mut a, &chunk(2, &body(9, 1, 1000)), 1500);
    assert_eq!((c.counts.ok, c.counts.errors()), (3, 0));
    // Its order is still checked per connection.
    c.check(2, &mut b, &chunk(3, &body(9, 1, 1000)), 1500);
    assert_eq!(c.counts.out_of_order, 1);
}
