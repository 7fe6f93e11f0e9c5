//! The check report as an aligned table and as JSON.

use std::fmt::Write as _;

use super::{Allows, Report};

impl Report {
    /// N fits: no limit says no.
    pub fn fits(&self) -> bool {
        self.verdicts.iter().all(|v| v.allows != Allows::No)
    }

    /// The lowest cap among the limits that say no.
    pub fn cap(&self) -> Option<(u64, &'static str)> {
        let no = self.verdicts.iter().filter(|v| v.allows == Allows::No);
        no.filter_map(|v| Some((v.caps_at?, v.limit))).min()
    }

    /// The final line.
    pub fn summary(&self) -> String {
        let conns = commas(self.target.conns);
        if self.fits() {
            return format!("FITS: {conns} connections are within every limit of this box");
        }
        let no = self.verdicts.iter().filter(|v| v.allows == Allows::No);
        let no: Vec<&str> = no.map(|v| v.limit).collect();
        let cap = (self.cap()).map_or(String::new(), |(c, l)| {
            format!(", capped at {} by {l}", commas(c))
        });
        format!(
            "DOES NOT FIT: {conns} connections{cap}; limits that say NO: {}. kernel-tuning/ \
             (apply.sh, uring-comet.service) sets them all",
            no.join(", "),
        )
    }

    /// The aligned table, the notes and the final line.
    pub fn text(&self) -> String {
        let t = &self.target;
        let clients = match t.loopback {
            true => "load generator on this box (2 sockets each)",
            false => "remote clients (1 socket each)",
        };
        let mut out = format!(
            "check-system: {} connections, {clients}, {} shard(s), {} backend\n\n",
            commas(t.conns),
            t.shards,
            self.backend,
        );
        let head = ["LIMIT", "CURRENT", "ALLOWS N?", "CAPS N AT", "FIX"].map(String::from);
        let mut rows = vec![head];
        for v in &self.verdicts {
            let word = if v.allows == Allows::No {
                "NO"
            } else {
                allows_word(v.allows)
            };
            let fix = if v.fix.is_empty() { "-" } else { &v.fix };
            let caps = v.caps_at.map_or("-".into(), commas);
            rows.push([
                v.limit.into(),
                v.current.clone(),
                word.into(),
                caps,
                fix.into(),
            ]);
        }
        let width = |c: usize| rows.iter().map(|r| r[c].len()).max().unwrap_or(0);
        let widths = [width(0), width(1), width(2), width(3)];
        for r in &rows {
            for (cell, w) in r.iter().zip(widths) {
                let _ = write!(out, "{cell:<w$}  ");
            }
            let _ = writeln!(out, "{}", r[4]);
        }
        out.push_str("\nnotes:\n");
        for v in &self.verdicts {
            let _ = writeln!(out, "  {}: {}", v.limit, v.note);
        }
        let _ = writeln!(out, "\n{}", self.summary());
        out
    }

    /// One JSON object: the target, `fits`, `cap`, one object per limit, the final line.
    pub fn json(&self) -> String {
        let t = &self.target;
        let opt = |n: Option<u64>| n.map_or("null".into(), |n| n.to_string());
        let limits: Vec<String> = (self.verdicts.iter())
            .map(|v| {
                format!(
                    "{{\"limit\":{},\"current\":{},\"allows\":\"{}\",\"caps_at\":{},\"fix\":{},\"note\":{}}}",
                    json_str(v.limit),
                    json_str(&v.current),
                    allows_word(v.allows),
                    opt(v.caps_at),
                    json_str(&v.fix),
                    json_str(&v.note),
                )
            })
            .collect();
        format!(
            "{{\"conns\":{},\"loopback\":{},\"shards\":{},\"backend\":\"{}\",\"fits\":{},\"cap\":{},\"limits\":[{}],\"summary\":{}}}\n",
            t.conns,
            t.loopback,
            t.shards,
            self.backend,
            self.fits(),
            opt(self.cap().map(|(c, _)| c)),
            limits.join(","),
            json_str(&self.summary()),
        )
    }
}

pub(super) fn allows_word(a: Allows) -> &'static str {
    match a {
        Allows::Yes => "yes",
        Allows::Warn => "warn",
        Allows::No => "no",
    }
}

/// `1234567` -> `1,234,567`.
pub(super) fn commas(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Bytes in GiB, or MiB below one GiB, one decimal.
pub(super) fn gib(bytes: u64) -> String {
    match bytes >= 1 << 30 {
        true => format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64),
        false => format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64),
    }
}

/// A JSON string literal.
pub(super) fn json_str(s: &str) -> String {
    // Serialising a str cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}
