//! Presence feeds (`GET /events/presence`, issue 15): opening one with or without a cursor,
//! and its events read with their exact bytes.

use std::net::SocketAddr;

use super::client::Client;

/// One presence event as read from a feed: (cursor, `online`/`offline`, id).
pub(crate) type Event = (String, String, String);

/// Opens `/events/presence` (with `Last-Event-ID: cursor` if given); returns the connection
/// and the cursor of its opening, after checking the head and (if `reset`) the reset event.
pub(crate) fn open_feed(
    addr: SocketAddr,
    cursor: Option<&str>,
    reset: Option<&str>,
) -> (Client, String) {
    let mut c = Client::connect(addr);
    let last = cursor.map_or(String::new(), |v| format!("Last-Event-ID: {v}\r\n"));
    c.send(format!("GET /events/presence HTTP/1.1\r\nHost: x\r\n{last}\r\n").as_bytes());
    let head = c.read_head();
    head.expect_200();
    head.expect_header("content-type", "text/event-stream");
    head.expect_header("transfer-encoding", "chunked");
    if let Some(r) = reset {
        let want = format!("event: reset\ndata: {{\"reason\":\"{r}\"}}\n\n");
        assert_eq!(String::from_utf8(c.read_chunk()).unwrap(), want);
    }
    let open = String::from_utf8(c.read_chunk()).unwrap();
    let at = open
        .strip_prefix(": presence\nid: ")
        .and_then(|r| r.strip_suffix("\n\n"));
    let at = at.unwrap_or_else(|| panic!("feed opening: {open:?}"));
    (c, at.to_string())
}

/// The next event of a feed (heartbeats skipped), its bytes checked exactly.
pub(crate) fn next_event(c: &mut Client) -> Event {
    loop {
        let ev = String::from_utf8(c.read_chunk()).unwrap();
        if ev == ": ping\n\n" {
            continue;
        }
        let lines: Vec<&str> = ev.strip_suffix("\n\n").unwrap_or("").split('\n').collect();
        let [id, kind, data] = lines[..] else {
            panic!("not an event: {ev:?}");
        };
        let field = |l: &str, name: &str| l.strip_prefix(name).map(str::to_string);
        let e = (
            field(id, "id: "),
            field(kind, "event: "),
            field(data, "data: "),
        );
        let (Some(at), Some(kind), Some(who)) = e else {
            panic!("not an event: {ev:?}");
        };
        assert!(kind == "online" || kind == "offline", "{ev:?}");
        return (at, kind, who);
    }
}

/// The offset of a cursor `<epoch>-<seq>`.
pub(crate) fn seq_of(cursor: &str) -> u64 {
    cursor.rsplit('-').next().unwrap().parse().unwrap()
}
