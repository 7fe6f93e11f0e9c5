//! Durations on the command line, the one parser of every time flag of every subcommand:
//! `30` or `30s`, `250ms`, `10m`, `1h`, `1.5h`, `1h30m`.
//!
//! A bare number is in the flag's own unit, so the spellings the flags took before keep
//! working: seconds for most ([`parse_duration`], [`parse_secs`], [`parse_whole_secs`]:
//! `--duration 30`), milliseconds for the `-ms` flags ([`parse_millis`]: `--drain-ms 2000`,
//! now also `--drain-ms 2s`).

use std::time::Duration;

/// Parses a duration: a bare number of seconds, or one or more `NUMBER UNIT` parts with units
/// `ms`, `s`/`sec`, `m`/`min`, `h`, `d` (e.g. `1h30m`). Errors (a message for clap): empty,
/// an unknown or missing unit, negative, not finite, or over 10^9 s.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_bare_in(s, 1.0)
}

/// [`parse_duration`] as seconds, for flags kept as `f64` seconds.
pub fn parse_secs(s: &str) -> Result<f64, String> {
    parse_duration(s).map(|d| d.as_secs_f64())
}

/// [`parse_duration`] as whole seconds (rounded down), for flags kept as integer seconds
/// (`--mem-interval`, `--heartbeat`).
pub fn parse_whole_secs(s: &str) -> Result<u64, String> {
    parse_duration(s).map(|d| d.as_secs())
}

/// A duration in milliseconds where a bare number is milliseconds (`2000`), units allowed
/// (`2s`), for the `-ms` flags. Errors: as [`parse_duration`].
pub fn parse_millis(s: &str) -> Result<u64, String> {
    parse_bare_in(s, 0.001).map(|d| d.as_millis() as u64)
}

/// The parser: a bare number is `bare_scale` seconds; otherwise `NUMBER UNIT` parts.
fn parse_bare_in(s: &str, bare_scale: f64) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(n) = t.parse::<f64>() {
        return to_duration(n * bare_scale, s);
    }
    let mut total = 0.0;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("bad duration {s:?}: expected a number at {rest:?}"));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("bad duration {s:?}: bad number {:?}", &rest[..num_len]))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match rest[..unit_len].trim() {
            "ms" => 0.001,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "" => return Err(format!("bad duration {s:?}: a unit must follow {value}")),
            u => {
                return Err(format!(
                    "bad duration {s:?}: unknown unit {u:?} (ms, s, m, h, d)"
                ))
            }
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    to_duration(total, s)
}

fn to_duration(secs: f64, s: &str) -> Result<Duration, String> {
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("bad duration {s:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_millis, parse_secs, parse_whole_secs};

    #[test]
    fn units_and_bare_seconds() {
        let secs = |s: &str| parse_duration(s).unwrap().as_secs_f64();
        assert_eq!(secs("30"), 30.0);
        assert_eq!(secs("2.5"), 2.5);
        assert_eq!(secs("30s"), 30.0);
        assert_eq!(secs("10m"), 600.0);
        assert_eq!(secs("1h"), 3600.0);
        assert_eq!(secs("1.5h"), 5400.0);
        assert_eq!(secs("1h30m"), 5400.0);
        assert_eq!(secs("2m30s"), 150.0);
        assert_eq!(secs("250ms"), 0.25);
        assert_eq!(secs("1d"), 86_400.0);
        assert_eq!(secs(" 5min "), 300.0);
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "m", "10x", "-5", "1h-", "1..5s", "nan", "inf", "s10"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_secs("10m"), Ok(600.0));
    }

    #[test]
    fn bare_number_in_the_flags_unit() {
        assert_eq!(parse_millis("2000"), Ok(2000));
        assert_eq!(parse_millis("2s"), Ok(2000));
        assert_eq!(parse_millis("250ms"), Ok(250));
        assert_eq!(parse_whole_secs("60"), Ok(60));
        assert_eq!(parse_whole_secs("1m"), Ok(60));
        assert_eq!(parse_whole_secs("1.9"), Ok(1));
        assert!(parse_millis("-1").is_err());
    }
}
