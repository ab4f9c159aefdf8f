//! Passive ejections: targets this Envoy saw fail, and until when they are avoided.
//!
//! The set lives in Envoy shared data so every worker sees an ejection at once; workers
//! update it with compare-and-swap. The encoding is one line per target,
//! `envoy_cluster<TAB>until_ms<TAB>level`, small enough to decode only when its CAS token
//! changes (not per request).

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ejection {
    pub envoy_cluster: String,
    /// Wall-clock milliseconds until which the target is avoided.
    pub until_ms: u64,
    /// How many times in a row it was ejected (0 = first); sets the back-off.
    pub level: u32,
}

/// Every ejection known to this Envoy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ejections {
    pub entries: Vec<Ejection>,
}

impl Ejections {
    /// Reads the shared-data encoding; lines that do not parse are dropped (a torn or
    /// foreign value must never stop routing).
    pub fn decode(bytes: &[u8]) -> Ejections {
        let text = String::from_utf8_lossy(bytes);
        let entries = text
            .lines()
            .filter_map(|line| {
                let mut parts = line.split('\t');
                let envoy_cluster = parts.next()?.to_string();
                let until_ms = parts.next()?.parse().ok()?;
                let level = parts.next()?.parse().ok()?;
                (!envoy_cluster.is_empty()).then_some(Ejection {
                    envoy_cluster,
                    until_ms,
                    level,
                })
            })
            .collect();
        Ejections { entries }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::new();
        for e in &self.entries {
            out.push_str(&e.envoy_cluster);
            out.push('\t');
            out.push_str(&e.until_ms.to_string());
            out.push('\t');
            out.push_str(&e.level.to_string());
            out.push('\n');
        }
        out.into_bytes()
    }

    /// Is `envoy_cluster` ejected at `now_ms`?
    pub fn is_ejected(&self, envoy_cluster: &str, now_ms: u64) -> bool {
        self.entries
            .iter()
            .any(|e| e.envoy_cluster == envoy_cluster && now_ms < e.until_ms)
    }

    /// Records a failure of `envoy_cluster` at `now_ms`. A target that fails again
    /// soon after its last ejection ended is ejected for twice as long, up to `max`;
    /// one that stayed good for `max` starts again from `base`. Returns the ejection
    /// time, or `None` when it was already ejected (another worker got there first).
    pub fn eject(
        &mut self,
        envoy_cluster: &str,
        now_ms: u64,
        base: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let base_ms = base.as_millis() as u64;
        let max_ms = max.as_millis() as u64;
        // Forget ejections that ended long ago, so the set stays small.
        self.entries.retain(|e| {
            e.envoy_cluster == envoy_cluster || now_ms < e.until_ms.saturating_add(max_ms)
        });
        let level = match self
            .entries
            .iter()
            .find(|e| e.envoy_cluster == envoy_cluster)
        {
            Some(e) if now_ms < e.until_ms => return None,
            Some(e) if now_ms < e.until_ms.saturating_add(max_ms) => e.level.saturating_add(1),
            _ => 0,
        };
        let span_ms = base_ms.saturating_mul(1u64 << level.min(20)).min(max_ms);
        self.entries.retain(|e| e.envoy_cluster != envoy_cluster);
        self.entries.push(Ejection {
            envoy_cluster: envoy_cluster.to_string(),
            until_ms: now_ms.saturating_add(span_ms),
            level,
        });
        Some(Duration::from_millis(span_ms))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const BASE: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(8);

    #[test]
    fn an_ejected_target_is_avoided_until_its_time_is_up() {
        let mut e = Ejections::default();
        assert_eq!(e.eject("a", 1_000, BASE, MAX), Some(BASE));
        assert!(e.is_ejected("a", 1_999));
        assert!(!e.is_ejected("a", 2_000));
        assert!(!e.is_ejected("b", 1_500));
    }

    #[test]
    fn repeated_failures_back_off_exponentially_up_to_the_cap() {
        let mut e = Ejections::default();
        let mut now = 0;
        let mut spans = vec![];
        for _ in 0..6 {
            let span = e.eject("a", now, BASE, MAX).unwrap();
            spans.push(span.as_secs());
            now += span.as_millis() as u64; // fails again right as it comes back
        }
        assert_eq!(spans, vec![1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn a_target_that_stayed_good_starts_again_from_the_base() {
        let mut e = Ejections::default();
        e.eject("a", 0, BASE, MAX);
        e.eject("a", 1_000, BASE, MAX);
        // Level 1 ended at 3s; good for longer than MAX afterwards.
        assert_eq!(e.eject("a", 3_000 + 8_001, BASE, MAX), Some(BASE));
    }

    #[test]
    fn a_second_report_of_the_same_failure_changes_nothing() {
        let mut e = Ejections::default();
        e.eject("a", 0, BASE, MAX);
        assert_eq!(e.eject("a", 10, BASE, MAX), None);
    }

    #[test]
    fn encoding_round_trips_and_tolerates_garbage() {
        let mut e = Ejections::default();
        e.eject("detour|east|apps|foo", 5, BASE, MAX);
        e.eject("detour|west|apps|foo", 6, BASE, MAX);
        assert_eq!(Ejections::decode(&e.encode()), e);
        let garbled = Ejections::decode(b"x\t1\nok\t10\t0\n\t5\t1\n\xff\xfe");
        assert_eq!(garbled.entries.len(), 1);
        assert!(garbled.is_ejected("ok", 9));
    }
}
