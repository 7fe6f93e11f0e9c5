//! The worker's line protocol to `loadtest million`: `P` progress lines while it runs, one
//! `R` verdict line at the end (see the [module doc](super)); both written and parsed here.

/// Upper bounds (us) of the latency buckets: bucket `b` holds latencies in `[2^(b-1), 2^b)`.
pub(crate) const LAT_BUCKETS: usize = 32;

/// What a worker found at the end, over all its connections.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Connections asked for.
    pub(crate) count: u64,
    /// Streams that got their `200` head.
    pub(crate) connected: u64,
    /// Connects that never got a head.
    pub(crate) failed: u64,
    /// Streams that ended after their head, before the close.
    pub(crate) closed: u64,
    /// Connections that got exactly one good message.
    pub(crate) exact: u64,
    /// Connections that got none.
    pub(crate) missing: u64,
    /// Connections that got more than one (a duplicate).
    pub(crate) extra: u64,
    /// Chunks that were not the expected message (garbled, wrong id or seq, wrong `#N`).
    pub(crate) bad: u64,
    /// Heartbeat chunks (`\n`), if the server sends them.
    pub(crate) heartbeats: u64,
    /// This process's CPU time, user + system, seconds x 1000.
    pub(crate) cpu_ms: u64,
    /// Peak RSS of this process (VmHWM), bytes.
    pub(crate) hwm: u64,
    /// Publish-to-receive latency histogram, log2 buckets of microseconds.
    pub(crate) lat: Vec<u64>,
    /// The first few problems, described (spaces replaced by `_`).
    pub(crate) notes: Vec<String>,
}

impl Verdict {
    /// The `R ...` line (without the newline).
    pub(crate) fn line(&self) -> String {
        let lat: Vec<String> = self.lat.iter().map(u64::to_string).collect();
        let mut s = format!(
            "R count={} connected={} failed={} closed={} exact={} missing={} extra={} bad={} heartbeats={} cpu_ms={} hwm={} lat={}",
            self.count, self.connected, self.failed, self.closed, self.exact, self.missing,
            self.extra, self.bad, self.heartbeats, self.cpu_ms, self.hwm, lat.join(",")
        );
        for n in &self.notes {
            s.push_str(" note=");
            s.push_str(&n.replace(char::is_whitespace, "_"));
        }
        s
    }

    /// Parses an `R ...` line.
    pub(crate) fn parse(line: &str) -> Option<Verdict> {
        let mut v = Verdict::default();
        let mut words = line.split_whitespace();
        if words.next()? != "R" {
            return None;
        }
        for w in words {
            let (k, val) = w.split_once('=')?;
            let num = || val.parse::<u64>().ok();
            match k {
                "count" => v.count = num()?,
                "connected" => v.connected = num()?,
                "failed" => v.failed = num()?,
                "closed" => v.closed = num()?,
                "exact" => v.exact = num()?,
                "missing" => v.missing = num()?,
                "extra" => v.extra = num()?,
                "bad" => v.bad = num()?,
                "heartbeats" => v.heartbeats = num()?,
                "cpu_ms" => v.cpu_ms = num()?,
                "hwm" => v.hwm = num()?,
                "lat" => {
                    v.lat = val
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| s.parse().ok())
                        .collect::<Option<_>>()?
                }
                "note" => v.notes.push(val.to_string()),
                _ => {}
            }
        }
        Some(v)
    }
}

/// A `P ...` progress line's numbers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Streams with a `200` head.
    pub(crate) connected: u64,
    /// Connects that never got a head.
    pub(crate) failed: u64,
    /// Streams that ended after their head.
    pub(crate) closed: u64,
    /// Good messages.
    pub(crate) received: u64,
    /// Bad chunks.
    pub(crate) bad: u64,
}

impl Progress {
    /// The `P ...` line (without the newline).
    pub(crate) fn line(&self) -> String {
        format!(
            "P {} {} {} {} {}",
            self.connected, self.failed, self.closed, self.received, self.bad
        )
    }

    /// Parses a `P ...` line.
    pub(crate) fn parse(line: &str) -> Option<Progress> {
        let mut w = line.split_whitespace();
        if w.next()? != "P" {
            return None;
        }
        let mut n = || w.next()?.parse::<u64>().ok();
        Some(Progress {
            connected: n()?,
            failed: n()?,
            closed: n()?,
            received: n()?,
            bad: n()?,
        })
    }
}

/// The log2 bucket of a latency in microseconds.
pub(crate) fn lat_bucket(us: u64) -> usize {
    ((64 - us.leading_zeros()) as usize).min(LAT_BUCKETS - 1)
}

#[cfg(test)]
mod tests {
    use super::{lat_bucket, Progress, Verdict, LAT_BUCKETS};

    #[test]
    fn lines_round_trip() {
        let p = Progress {
            connected: 5,
            failed: 1,
            closed: 2,
            received: 4,
            bad: 0,
        };
        assert_eq!(Progress::parse(&p.line()), Some(p));
        assert_eq!(Progress::parse("P 1 2"), None);
        let v = Verdict {
            count: 10,
            connected: 9,
            exact: 8,
            missing: 2,
            lat: vec![0, 3, 5],
            notes: vec!["id 3: connect: refused (os error 111)".into()],
            ..Verdict::default()
        };
        let back = Verdict::parse(&v.line()).unwrap();
        assert_eq!(back.exact, 8);
        assert_eq!(back.lat, vec![0, 3, 5]);
        assert_eq!(back.notes, vec!["id_3:_connect:_refused_(os_error_111)"]);
        assert_eq!(lat_bucket(0), 0);
        assert_eq!(lat_bucket(1), 1);
        assert_eq!(lat_bucket(1000), 10);
        assert_eq!(lat_bucket(u64::MAX), LAT_BUCKETS - 1);
    }
}
