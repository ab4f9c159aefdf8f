//! Durations as operators write them in documents and filter configuration: `500ms`,
//! `1s`, `1.5s`, `2m`, `1h`, or a sum like `1m30s`. One parser for the controller and the
//! filter, so a value accepted by `detour check` means the same thing inside Envoy.

use std::fmt;
use std::time::Duration;

/// Why a duration string was refused; the caller adds the field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError(pub String);

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DurationError {}

/// Parses `[0-9.]+(ms|s|m|h)` repeated, e.g. `250ms`, `1s`, `1m30s`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let bad = |why: &str| {
        DurationError(format!(
            "invalid duration {text:?}: {why} (expected e.g. \"500ms\", \"1s\", \"2m\")"
        ))
    };
    if text.is_empty() {
        return Err(bad("empty"));
    }
    let mut total_ms: f64 = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(bad("a number must come first"));
        }
        let (number, after) = rest.split_at(number_len);
        let value: f64 = number.parse().map_err(|_| bad("not a number"))?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale = match unit {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "" => return Err(bad("missing unit")),
            _ => return Err(bad("unknown unit")),
        };
        total_ms += value * scale;
        rest = next;
    }
    if !total_ms.is_finite() || total_ms > 1e12 {
        return Err(bad("too large"));
    }
    Ok(Duration::from_micros((total_ms * 1_000.0).round() as u64))
}

/// Formats a duration the way [`parse_duration`] reads it (`1500ms` → `1.5s`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".to_string()
    } else if !ms.is_multiple_of(1_000) && ms < 1_000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(60_000) && ms >= 60_000 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// Serde adapter for duration strings in JSON documents shared by controller and filter.
pub mod serde_text {
    use super::{format_duration, parse_duration};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn reads_the_units_operators_write() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_what_it_cannot_read_and_says_why() {
        for bad in ["", "10", "ten s", "1x", "s", "1..2s", "-1s", "1e300h"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.0.contains("invalid duration"), "{bad:?}: {err}");
        }
        assert!(parse_duration("10").unwrap_err().0.contains("missing unit"));
        assert!(parse_duration("1x").unwrap_err().0.contains("unknown unit"));
    }

    #[test]
    fn formatting_round_trips() {
        for ms in [
            0, 1, 250, 999, 1000, 1500, 10_000, 60_000, 90_000, 3_600_000,
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{ms}ms");
        }
    }
}
