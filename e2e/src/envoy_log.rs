//! Reading an Envoy log: which thread logged what, and when. The harness runs Envoy with
//! the filter's debug lines on and its clock in UTC ([`crate::envoy`]), so a test can
//! tell when each worker's VM adopted a table, on the same clock as its own
//! measurements.
//!
//! Lines have Envoy's default format,
//! `[2026-11-24 15:49:36.728][22914][debug][wasm] [source/...:1148] wasm log ...: MESSAGE`.

use anyhow::{Context, Result};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// When it was logged (millisecond precision).
    pub at: SystemTime,
    /// The id of the thread that logged it: a worker, or the main thread.
    pub thread: u64,
    pub level: String,
    /// Everything after the level and component.
    pub text: String,
}

/// Every line of the log at `path` in Envoy's format (others, such as the harness's
/// start markers, are skipped).
pub fn read(path: &Path) -> Result<Vec<Line>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().filter_map(parse_line).collect())
}

/// The filter's line for a VM that starts routing by table `version`
/// (`filter/src/wasm/table_sync.rs`).
pub fn adopted(version: &str) -> String {
    format!("detour: using table version {version}")
}

/// The version in a line [`adopted`] would write, if `text` is one.
pub fn adopted_version(text: &str) -> Option<&str> {
    let (_, version) = text.split_once(&adopted(""))?;
    (!version.is_empty()).then_some(version.trim())
}

/// The filter's line for a VM that was configured (one per VM: the main thread's and
/// each worker's; `filter/src/wasm/root.rs`).
pub const CONFIGURED: &str = "detour: worker ";

pub fn parse_line(line: &str) -> Option<Line> {
    let rest = line.strip_prefix('[')?;
    let (stamp, rest) = rest.split_once("][")?;
    let (thread, rest) = rest.split_once("][")?;
    let (level, rest) = rest.split_once("][")?;
    let (_component, text) = rest.split_once("] ")?;
    Some(Line {
        at: parse_utc(stamp)?,
        thread: thread.parse().ok()?,
        level: level.to_string(),
        text: text.to_string(),
    })
}

/// `2026-11-24 15:49:36.728` (UTC) as a time.
fn parse_utc(stamp: &str) -> Option<SystemTime> {
    let (date, time) = stamp.split_once(' ')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, millis) = time.split_once('.')?;
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (t.next()??, t.next()??, t.next()??);
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let secs = days * 86_400 + h * 3_600 + m * 60 + s;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis.parse().ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_give_their_time_thread_and_text() {
        let line = "[2026-11-24 15:49:36.728][22914][debug][wasm] \
                    [source/extensions/common/wasm/context.cc:1148] wasm log detour: \
                    detour: using table version f577fc273df4ff1d";
        let parsed = parse_line(line).unwrap();
        assert_eq!(parsed.thread, 22914);
        assert_eq!(parsed.level, "debug");
        assert!(parsed.text.ends_with(&adopted("f577fc273df4ff1d")));
        assert_eq!(adopted_version(&parsed.text), Some("f577fc273df4ff1d"));
        // 2026-11-24 is day 20781 since the epoch (`date -ud 2026-11-24 +%s` / 86400),
        // and 15:49:36.728 is 56 976 728 ms into it.
        let expected = UNIX_EPOCH + Duration::from_millis(20_781 * 86_400_000 + 56_976_728);
        assert_eq!(parsed.at, expected);
        assert_eq!(parse_line("==== detour-e2e: start #1 of envoy-east"), None);
    }

    #[test]
    fn civil_dates_count_days_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
    }
}
