//! Durations as Istio accepts them: protobuf JSON (`"1.5s"`) and Go
//! `time.ParseDuration` strings (`"100ms"`, `"1m30s"`, `"1h"`), as the
//! Kubernetes CRD schema does.
use std::time::Duration;

/// Parses a duration. Units: `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`; numbers may
/// have a fraction; several parts add up (`1m30s`). Negative values and a
/// missing unit are errors (Istio's wording: `invalid duration`).
pub fn parse(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {s:?}");
    let t = s.trim();
    if t.is_empty() || t.starts_with('-') {
        return Err(err());
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let b = t.as_bytes();
    let mut i = 0;
    let mut nanos: f64 = 0.0;
    while i < b.len() {
        let start = i;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let num: f64 = t[start..i].parse().map_err(|_| err())?;
        let ustart = i;
        while i < b.len() && !(b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let mult = match &t[ustart..i] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        nanos += num * mult;
    }
    if !nanos.is_finite() || nanos > u64::MAX as f64 {
        return Err(err());
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

/// Parses to whole milliseconds (sub-millisecond parts round down).
pub fn parse_ms(s: &str) -> Result<u64, String> {
    parse(s).map(|d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_istio_and_go_forms() {
        assert_eq!(parse_ms("7s").unwrap(), 7000);
        assert_eq!(parse_ms("0.5s").unwrap(), 500);
        assert_eq!(parse_ms("100ms").unwrap(), 100);
        assert_eq!(parse_ms("1m").unwrap(), 60_000);
        assert_eq!(parse_ms("1m30s").unwrap(), 90_000);
        assert_eq!(parse_ms("1h").unwrap(), 3_600_000);
        assert_eq!(parse("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "5", "-1s", "1x", "s", "1.2.3s", "abc"] {
            assert!(parse(bad).is_err(), "{bad} should fail");
        }
    }
}
