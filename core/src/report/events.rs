//! What just happened, for people looking at an incident: failovers and failbacks,
//! changes of the checks' verdict on a target, configurations applied or refused.
//!
//! The log lives in memory and is bounded: the status page and `detour status` show the
//! last few dozen entries, and a controller that runs for months must not grow. It is
//! per replica (each replica checks every target itself) and starts empty on restart;
//! Kubernetes Events are the durable record.

use detour_filter::health::Health;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Entries kept; older ones are dropped.
pub const DEFAULT_CAPACITY: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A scheme's traffic moved to a later (lower-priority) group.
    FailedOver,
    /// A scheme's traffic moved back to an earlier group.
    FailedBack,
    /// The checks' verdict on a target changed (not its first Healthy verdict: that is
    /// every target at start-up, and would push everything else out of the log).
    HealthChanged,
    /// A new configuration is in use.
    ConfigApplied,
    /// A configuration was refused; the last good one keeps serving.
    ConfigRefused,
    /// A cluster's table passed 80% of the filters' `maxTableBytes`.
    TableNearLimit,
    /// A cluster's table is over `maxTableBytes`: not served, the last good one stays.
    TableRefused,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::FailedOver => "FailedOver",
            EventKind::FailedBack => "FailedBack",
            EventKind::HealthChanged => "HealthChanged",
            EventKind::ConfigApplied => "ConfigApplied",
            EventKind::ConfigRefused => "ConfigRefused",
            EventKind::TableNearLimit => "TableNearLimit",
            EventKind::TableRefused => "TableRefused",
        }
    }
}

/// One entry, as the status API serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Increases by one per entry, from 1 at the controller's start.
    pub seq: u64,
    /// RFC 3339.
    pub at: String,
    pub kind: EventKind,
    /// `namespace/name` of the scheme (failover, failback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The member cluster of the target (health changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// `namespace/name` of the target's service (health changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_group: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_group: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Health>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Health>,
    /// What happened and why, in a sentence. Free text: it quotes the configuration
    /// (a refused document's values) and check errors, so every reader must treat it as
    /// untrusted text.
    pub message: String,
}

impl Event {
    /// An entry of `kind` saying `message`; [`EventLog::push`] numbers and dates it.
    pub fn new(kind: EventKind, message: String) -> Event {
        Event {
            seq: 0,
            at: String::new(),
            kind,
            scheme: None,
            cluster: None,
            service: None,
            from_group: None,
            to_group: None,
            from: None,
            to: None,
            message,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EventLog {
    capacity: usize,
    next_seq: u64,
    /// Oldest first.
    events: VecDeque<Event>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::new(DEFAULT_CAPACITY)
    }
}

impl EventLog {
    pub fn new(capacity: usize) -> EventLog {
        EventLog {
            capacity: capacity.max(1),
            next_seq: 1,
            events: VecDeque::new(),
        }
    }

    /// Appends `event` at `at` (RFC 3339), dropping the oldest entry when full.
    pub fn push(&mut self, at: &str, mut event: Event) {
        event.seq = self.next_seq;
        event.at = at.to_string();
        self.next_seq += 1;
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Every entry kept, newest first (what readers show first).
    pub fn newest_first(&self) -> Vec<Event> {
        self.events.iter().rev().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_bounded_numbered_and_newest_first() {
        let mut log = EventLog::new(3);
        assert!(log.is_empty());
        for i in 1..=5 {
            log.push(
                &format!("t{i}"),
                Event::new(EventKind::FailedOver, format!("move {i}")),
            );
        }
        assert_eq!(log.len(), 3);
        let seqs: Vec<u64> = log.newest_first().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [5, 4, 3], "the oldest were dropped, numbers go on");
        assert_eq!(log.newest_first()[0].at, "t5");
    }

    #[test]
    fn entries_serialise_without_empty_fields() {
        let mut log = EventLog::default();
        let mut e = Event::new(EventKind::HealthChanged, "east is down".into());
        e.cluster = Some("east".into());
        e.from = Some(Health::Healthy);
        e.to = Some(Health::Unhealthy);
        log.push("2026-01-01T00:00:00Z", e);
        let json = serde_json::to_value(&log.newest_first()[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"seq": 1, "at": "2026-01-01T00:00:00Z", "kind": "HealthChanged",
                "cluster": "east", "from": "Healthy", "to": "Unhealthy", "message": "east is down"})
        );
    }
}
