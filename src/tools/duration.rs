//! Durations on the command line: `30` or `30s`, `250ms`, `10m`, `1h`, `1.5h`, `1h30m`.
//!
//! A bare number is seconds, so flags that took seconds before (`--duration 30`) keep working.

use std::time::Duration;

/// Parses a duration: a bare number of seconds, or one or more `NUMBER UNIT` parts with units
/// `ms`, `s`, `m`, `h`, `d` (e.g. `1h30m`). The result must be finite and non-negative.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return to_duration(secs, s);
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

/// [`parse_duration`] as seconds, for flags kept as `f64` seconds.
pub fn parse_secs(s: &str) -> Result<f64, String> {
    parse_duration(s).map(|d| d.as_secs_f64())
}

fn to_duration(secs: f64, s: &str) -> Result<Duration, String> {
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("bad duration {s:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
