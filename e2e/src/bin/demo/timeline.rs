//! The demo's live view of the load: one line per second with answers per cluster and
//! errors, and between them, in order, the demo's actions and the moments the answering
//! cluster changed.

use detour_e2e::load::Sample;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The answering cluster changed.
#[derive(Debug, Clone)]
pub struct Switch {
    /// When the first request the new cluster answered was sent.
    pub at: Instant,
    pub from: Option<String>,
    pub to: String,
}

#[derive(Debug, Default, Clone)]
struct Tally {
    answered: BTreeMap<String, usize>,
    errors: usize,
}

/// Samples may still complete for a second shortly after it ends; its line waits this long.
const LINE_GRACE: Duration = Duration::from_millis(300);

pub struct Timeline {
    start: Instant,
    clusters: Vec<String>,
    /// Per second of completion (second 0 is [0 s, 1 s)).
    seconds: BTreeMap<u64, Tally>,
    /// Seconds before this one have been printed.
    next_line: u64,
    /// Events not printed yet: (when, line). A second's events print just before its
    /// line, so the output stays in time order.
    events: Vec<(Instant, String)>,
    /// The most recently *sent* successful answer: concurrent requests complete out of
    /// order, and a slow answer from the old cluster must not count as a switch back.
    latest: Option<(Instant, String)>,
    pub switches: Vec<Switch>,
}

impl Timeline {
    pub fn new(start: Instant, clusters: &[String]) -> Timeline {
        Timeline {
            start,
            clusters: clusters.to_vec(),
            seconds: BTreeMap::new(),
            next_line: 0,
            events: Vec::new(),
            latest: None,
            switches: Vec::new(),
        }
    }

    pub fn since_start(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.start)
    }

    /// The cluster answering now, as far as completed requests tell.
    pub fn current(&self) -> Option<&str> {
        self.latest.as_ref().map(|(_, c)| c.as_str())
    }

    /// Takes in newly completed requests; returns the switches they reveal.
    pub fn absorb(&mut self, samples: &[Sample]) -> Vec<Switch> {
        let mut switches = Vec::new();
        for sample in samples {
            let second = self.since_start(sample.done()).as_secs();
            let tally = self.seconds.entry(second).or_default();
            let Some(cluster) = sample.served_by().filter(|_| sample.succeeded()) else {
                tally.errors += 1;
                continue;
            };
            *tally.answered.entry(cluster.to_string()).or_insert(0) += 1;
            let newer = self
                .latest
                .as_ref()
                .is_none_or(|(sent, _)| sample.sent > *sent);
            if !newer {
                continue;
            }
            let from = self.latest.take().map(|(_, c)| c);
            if let Some(old) = from.as_deref().filter(|old| *old != cluster) {
                let line = format!(
                    "  ◆ {:>7}  now answered by {cluster} (was {old})",
                    secs(self.since_start(sample.sent))
                );
                self.events.push((sample.sent, line));
            }
            if from.as_deref() != Some(cluster) {
                switches.push(Switch {
                    at: sample.sent,
                    from: from.clone(),
                    to: cluster.to_string(),
                });
            }
            self.latest = Some((sample.sent, cluster.to_string()));
        }
        self.switches.extend(switches.iter().cloned());
        switches
    }

    /// Queues a line for something the demo did at `at`.
    pub fn action(&mut self, at: Instant, what: &str) {
        let line = format!("  ▶ {:>7}  {what}", secs(self.since_start(at)));
        self.events.push((at, line));
    }

    pub fn header(&self) -> String {
        let mut line = format!("  {:>9}", "second");
        for cluster in &self.clusters {
            line.push_str(&format!(" {cluster:>6}"));
        }
        line.push_str(&format!(" {:>7}", "errors"));
        line
    }

    /// Every line that is due by `now`: the lines of the seconds that have ended (plus
    /// [`LINE_GRACE`] for answers still arriving), each after the events inside it.
    pub fn due_lines(&mut self, now: Instant) -> Vec<String> {
        let elapsed = self.since_start(now).saturating_sub(LINE_GRACE).as_secs();
        let mut lines = Vec::new();
        while self.next_line < elapsed {
            let end = self.start + Duration::from_secs(self.next_line + 1);
            lines.extend(self.take_events_before(end));
            lines.push(self.second_line(self.next_line));
            self.next_line += 1;
        }
        lines
    }

    /// The events still queued, at the end of the demo.
    pub fn remaining_events(&mut self) -> Vec<String> {
        self.take_events_before(Instant::now() + Duration::from_secs(3600))
    }

    fn take_events_before(&mut self, end: Instant) -> Vec<String> {
        self.events.sort_by_key(|(at, _)| *at);
        let split = self.events.partition_point(|(at, _)| *at < end);
        self.events.drain(..split).map(|(_, line)| line).collect()
    }

    fn second_line(&self, second: u64) -> String {
        let empty = Tally::default();
        let tally = self.seconds.get(&second).unwrap_or(&empty);
        let mut line = format!("  {:>9}", format!("{second}–{}s", second + 1));
        for cluster in &self.clusters {
            let n = tally.answered.get(cluster).copied().unwrap_or(0);
            line.push_str(&format!(" {:>6}", dot_for_zero(n)));
        }
        line.push_str(&format!(" {:>7}", dot_for_zero(tally.errors)));
        // A bar of the second's answers, one mark per request, so a switch is visible
        // at a glance: each cluster has its own letter, errors are `x`.
        line.push_str("   ");
        for cluster in &self.clusters {
            let n = tally.answered.get(cluster).copied().unwrap_or(0);
            let mark = cluster.chars().next().unwrap_or('?');
            line.extend(std::iter::repeat_n(mark, n.min(40)));
        }
        line.extend(std::iter::repeat_n('x', tally.errors.min(40)));
        line
    }
}

/// Seconds since the start, as event lines print them.
pub fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn dot_for_zero(n: usize) -> String {
    if n == 0 {
        "·".to_string()
    } else {
        n.to_string()
    }
}

/// A short, stable description of how a request failed, for the summary.
pub fn failure_kind(sample: &Sample) -> String {
    match (sample.status(), sample.served_by()) {
        (None, _) => "no HTTP answer (connection error or timeout)".to_string(),
        (Some(status), Some(cluster)) => format!("{status} from {cluster}'s upstream"),
        (Some(status), None) => match &sample.outcome {
            detour_e2e::load::Outcome::Answered {
                reason: Some(reason),
                ..
            } => format!("{status} from detour: {reason}"),
            _ => format!("{status} from Envoy (no upstream reached)"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use detour_e2e::load::Outcome;

    fn answer(start: Instant, sent_ms: u64, latency_ms: u64, cluster: Option<&str>) -> Sample {
        Sample {
            test_id: format!("t{sent_ms}"),
            method: "GET".into(),
            sent: start + Duration::from_millis(sent_ms),
            latency: Duration::from_millis(latency_ms),
            outcome: Outcome::Answered {
                status: if cluster.is_some() { 200 } else { 503 },
                served_by: cluster.map(String::from),
                reason: None,
            },
        }
    }

    #[test]
    fn a_late_answer_from_the_old_cluster_is_not_a_switch_back() {
        let start = Instant::now();
        let mut timeline = Timeline::new(start, &["east".into(), "west".into()]);
        let first = timeline.absorb(&[answer(start, 0, 5, Some("east"))]);
        assert_eq!(
            first.len(),
            1,
            "the first answer sets the answering cluster"
        );
        assert_eq!(first[0].from, None);

        // Completion order: an error, west (sent at 300 ms), then a slow east answer
        // that was sent before west's.
        let switches = timeline.absorb(&[
            answer(start, 100, 5, None),
            answer(start, 300, 5, Some("west")),
            answer(start, 200, 400, Some("east")),
        ]);
        assert_eq!(switches.len(), 1, "{switches:?}");
        assert_eq!(
            (switches[0].from.as_deref(), switches[0].to.as_str()),
            (Some("east"), "west")
        );
        assert_eq!(switches[0].at, start + Duration::from_millis(300));
        assert_eq!(timeline.current(), Some("west"));
    }

    #[test]
    fn each_second_gets_one_line_after_the_events_inside_it() {
        let start = Instant::now();
        let mut timeline = Timeline::new(start, &["east".into(), "west".into()]);
        timeline.absorb(&[
            answer(start, 100, 5, Some("east")),
            answer(start, 200, 5, Some("east")),
            answer(start, 300, 5, None),
            answer(start, 1100, 5, Some("west")),
        ]);
        timeline.action(start + Duration::from_millis(1000), "killed east's foo");
        let early = timeline.due_lines(start + Duration::from_millis(900));
        assert!(early.is_empty(), "{early:?}");
        let lines = timeline.due_lines(start + Duration::from_millis(2400));
        assert_eq!(
            lines,
            [
                "       0–1s      2      ·       1   eex",
                "  ▶    1.0s  killed east's foo",
                "  ◆    1.1s  now answered by west (was east)",
                "       1–2s      ·      1       ·   w",
            ]
        );
        assert!(timeline.remaining_events().is_empty());
    }
}
