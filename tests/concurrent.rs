//! Many connections at once on a 2-shard server: thousands of subscribers, several publishers on
//! threads; and subscribers arriving while a publisher is sending.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const SUBS: usize = 3000;
/// Subscribers from this index on are also logged in under a shared id `s{i % SHARED}`.
const SHARED_FROM: usize = 2700;
const SHARED: usize = 10;
const PER_SHARED: u64 = ((SUBS - SHARED_FROM) / SHARED) as u64;
const READERS: usize = 4;
const PUBLISHERS: usize = 4;
const PER_PUB: usize = 1500;
/// The tail every message carries, and how it must arrive.
const TAIL: &str = "<&\">";
const TAIL_ESCAPED: &str = "&lt;&amp;&quot;&gt;";

fn sub_ids(i: usize) -> Vec<String> {
    let mut v = vec![format!("d{i}")];
    if i >= SHARED_FROM {
        v.push(format!("s{}", i % SHARED));
    }
    v
}

/// Publisher `p`'s targets, one per sequence number: 1 in 10 a shared id, else a distinct one.
fn plan(p: usize) -> Vec<String> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (p as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
    (0..PER_PUB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 10 == 0 {
                format!("s{}", (x / 10) % SHARED as u64)
            } else {
                format!("d{}", (x / 10) % SUBS as u64)
            }
        })
        .collect()
}

fn expected_delivered(id: &str) -> u64 {
    if id.starts_with('s') {
        PER_SHARED
    } else {
        1
    }
}

fn join<T>(h: thread::JoinHandle<T>) -> T {
    h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

both_backends! {
/// 3,000 subscriber connections (distinct ids, 300 of them also under 10 shared ids), 4
/// publishers on threads: every message arrives exactly once, in order per publisher and id, each
/// reply's `delivered` is the number of subscribers of its id, and the sum of the replies equals
/// what the subscribers received.
fn thousands_of_subscribers_several_publishers() {
    ensure_fd_limit((SUBS * 2 + 1000) as u64);
    let t0 = Instant::now();
    let server = start(2);
    let saddr = server.subscriber_addr();
    let paddr = server.publish_addr();
    let plans: Vec<Vec<String>> = (0..PUBLISHERS).map(plan).collect();

    // What each subscriber must receive: (publisher, id) -> sequence numbers in order.
    let mut by_id: HashMap<String, Vec<usize>> = HashMap::new();
    for i in 0..SUBS {
        for id in sub_ids(i) {
            by_id.entry(id).or_default().push(i);
        }
    }
    let mut expected: Vec<HashMap<(usize, String), Vec<usize>>> = vec![HashMap::new(); SUBS];
    let mut expected_total = 0u64;
    for (p, targets) in plans.iter().enumerate() {
        for (seq, id) in targets.iter().enumerate() {
            for &i in &by_id[id] {
                expected[i].entry((p, id.clone())).or_default().push(seq);
                expected_total += 1;
            }
        }
    }
    let expected = Arc::new(expected);

    // Readers: each connects its share of subscribers, reports ready, then reads what it must.
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut readers = Vec::new();
    for r in 0..READERS {
        let ready_tx = ready_tx.clone();
        let expected = expected.clone();
        readers.push(thread::spawn(move || {
            let mine: Vec<usize> = (r..SUBS).step_by(READERS).collect();
            let mut subs = Vec::with_capacity(mine.len());
            for &i in &mine {
                subs.push(Subscriber::connect(saddr, &sub_ids(i).join(",")));
            }
            ready_tx.send(r).unwrap();
            let mut received = 0u64;
            let mut cross_id_reorders = 0u64;
            for (k, sub) in subs.iter_mut().enumerate() {
                let i = mine[k];
                let want = &expected[i];
                let count: usize = want.values().map(Vec::len).sum();
                let ids = sub_ids(i);
                let mut got: HashMap<(usize, String), Vec<usize>> = HashMap::new();
                let mut last_seq_of_pub: HashMap<usize, usize> = HashMap::new();
                for _ in 0..count {
                    let text = sub.next_msg();
                    let text = String::from_utf8(text).expect("message not UTF-8");
                    let parts: Vec<&str> = text.split(' ').collect();
                    assert!(
                        parts.len() == 4 && parts[3] == TAIL_ESCAPED,
                        "subscriber {i}: malformed or wrongly escaped message {text:?}"
                    );
                    let p: usize = parts[0].parse().unwrap();
                    let seq: usize = parts[1].parse().unwrap();
                    let id = parts[2].to_string();
                    assert!(ids.contains(&id), "subscriber {i} ({ids:?}) got a message for {id}: {text:?}");
                    if let Some(&prev) = last_seq_of_pub.get(&p) {
                        if seq < prev {
                            cross_id_reorders += 1;
                        }
                    }
                    last_seq_of_pub.insert(p, seq);
                    got.entry((p, id)).or_default().push(seq);
                    received += 1;
                }
                for (key, seqs) in want {
                    assert_eq!(
                        got.get(key),
                        Some(seqs),
                        "subscriber {i}: messages from publisher {} to {} (exactly once, in order)",
                        key.0,
                        key.1
                    );
                }
            }
            (subs, received, cross_id_reorders)
        }));
    }
    drop(ready_tx);
    for _ in 0..READERS {
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a reader failed or took over 20 s to connect its subscribers");
    }
    let connected_at = t0.elapsed();

    // All subscribers are logged in (their heads were read): stats must count them.
    let mut sp = Publisher::connect(paddr);
    let stats = sp.stats();
    let conns = json_number(&stats, "connections");
    assert!(
        conns >= SUBS as f64,
        "{SUBS} subscribers open, stats connections = {conns}"
    );
    assert!(json_number(&stats, "ids") >= (SUBS + SHARED) as f64, "stats ids too low: {stats}");

    let mut pubs = Vec::new();
    for (p, targets) in plans.into_iter().enumerate() {
        pubs.push(thread::spawn(move || {
            let mut pc = Publisher::connect(paddr);
            let mut sum = 0u64;
            for (seq, id) in targets.iter().enumerate() {
                let msg = format!("{p} {seq} {id} {TAIL}");
                let n = pc.send(id, msg.as_bytes());
                assert_eq!(n, expected_delivered(id), "publisher {p} seq {seq} to {id}");
                sum += n;
            }
            sum
        }));
    }
    let delivered: u64 = pubs.into_iter().map(join).sum();
    let published_at = t0.elapsed();
    let mut received = 0u64;
    let mut reorders = 0u64;
    let mut all_subs = Vec::new();
    for h in readers {
        let (subs, n, ro) = join(h);
        received += n;
        reorders += ro;
        all_subs.extend(subs);
    }
    assert_eq!(delivered, expected_total, "sum of delivered replies vs. plan");
    assert_eq!(received, delivered, "messages received by subscribers vs. sum of delivered replies");

    // Exactly once: nothing more arrives.
    thread::sleep(Duration::from_millis(300));
    for (i, sub) in all_subs.iter_mut().enumerate() {
        sub.client.expect_nothing_pending(&format!("connection #{i} after all expected messages"));
    }
    eprintln!(
        "concurrent: {SUBS} subscribers connected in {connected_at:?}, {} sends done at {published_at:?}, \
         {received} deliveries, {reorders} cross-id reorderings within a connection (not an error), total {:?}",
        PUBLISHERS * PER_PUB,
        t0.elapsed()
    );
}
}

both_backends! {
/// Subscribers join one id while a publisher is sending to it: each gets a gap-free run of the
/// publisher's sequence, from no earlier than the sends already answered before it connected,
/// through the last message; sends written after its headers arrived always reach it.
fn subscribers_joining_during_publishing() {
    const N: usize = 2000;
    let server = start(2);
    let saddr = server.subscriber_addr();
    let paddr = server.publish_addr();
    let written = Arc::new(AtomicUsize::new(0));
    let replied = Arc::new(AtomicUsize::new(0));

    // Set once every subscriber has its headers; the publisher holds its last 50 sends until then,
    // so each subscriber is owed at least those.
    let subs_ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (written, replied, subs_ready) = (written.clone(), replied.clone(), subs_ready.clone());
        thread::spawn(move || {
            let mut p = Publisher::connect(paddr);
            let mut counts = Vec::with_capacity(N);
            for seq in 0..N {
                if seq == N - 50 {
                    let t = Instant::now();
                    while !subs_ready.load(SeqCst) {
                        assert!(t.elapsed() < Duration::from_secs(10), "subscribers never got ready");
                        thread::sleep(Duration::from_millis(1));
                    }
                }
                written.store(seq + 1, SeqCst);
                counts.push(p.send("churn", format!("churn {seq}").as_bytes()));
                replied.store(seq + 1, SeqCst);
                if seq % 4 == 0 {
                    thread::sleep(Duration::from_millis(1));
                }
            }
            counts
        })
    };

    let (conn_tx, conn_rx) = mpsc::channel();
    let mut subs = Vec::new();
    while written.load(SeqCst) < N * 9 / 10 && subs.len() < 100 {
        let (written, replied, conn_tx) = (written.clone(), replied.clone(), conn_tx.clone());
        subs.push(thread::spawn(move || {
            let answered_before = replied.load(SeqCst);
            let mut sub = Subscriber::connect(saddr, "churn");
            let written_after_head = written.load(SeqCst);
            conn_tx.send(()).unwrap();
            let mut seqs = Vec::new();
            loop {
                let text = String::from_utf8(sub.next_msg()).unwrap();
                let seq: usize = text
                    .strip_prefix("churn ")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("bad message {text:?}"));
                seqs.push(seq);
                if seq == N - 1 {
                    break;
                }
            }
            (answered_before, written_after_head, seqs)
        }));
        thread::sleep(Duration::from_millis(10));
    }
    drop(conn_tx);
    for _ in 0..subs.len() {
        conn_rx.recv_timeout(Duration::from_secs(10)).expect("a subscriber failed to connect");
    }
    subs_ready.store(true, SeqCst);
    assert!(subs.len() >= 10, "only {} subscribers joined during publishing", subs.len());
    let counts = join(publisher);
    let mut total_received = 0u64;
    for (k, h) in subs.into_iter().enumerate() {
        let (answered_before, written_after_head, seqs) = join(h);
        let first = seqs[0];
        assert!(
            first >= answered_before,
            "subscriber {k}: got seq {first}, but sends up to {answered_before} were answered before it connected"
        );
        assert!(
            first <= written_after_head,
            "subscriber {k}: first seq {first}, but every send from {written_after_head} on was made after its headers"
        );
        let contiguous: Vec<usize> = (first..N).collect();
        assert_eq!(seqs, contiguous, "subscriber {k}: gap, duplicate or reordering");
        total_received += seqs.len() as u64;
    }
    let total_delivered: u64 = counts.iter().sum();
    assert_eq!(total_delivered, total_received, "sum of delivered replies vs. messages received");
    // Counts never go down while nobody leaves.
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "delivered counts decreased: {counts:?}");
}
}
