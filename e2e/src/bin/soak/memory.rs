//! Resident memory of the Envoys and the controller, sampled through the run: a leak
//! under churn (connections, retries, tables, restarts of what they talk to) shows as
//! growth from the first sample, taken once the federation is up and the load steady.

use detour_e2e::topology::Topology;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// How much a process's resident memory may grow from the start of the soak to its end
/// (both taken under the same load) before the soak fails. Envoy with two V8 workers
/// holds about 100 MiB here, the controller a few tens; 64 MiB is more than any
/// steady state adds, and less than a per-request or per-restart leak adds in minutes.
pub const GROWTH_BOUND: u64 = 64 << 20;

#[derive(Debug, Clone, Copy)]
struct Track {
    start: u64,
    end: u64,
    max: u64,
}

#[derive(Debug, Default)]
pub struct Memory {
    tracks: BTreeMap<String, Track>,
}

impl Memory {
    /// One sample of every Envoy and of the controller; a process that is down now is
    /// skipped.
    pub fn sample(&mut self, t: &mut Topology) {
        let mut now: Vec<(String, Option<u64>)> = t
            .envoys_mut()
            .map(|e| (format!("envoy {}", e.name()), e.process().rss_bytes()))
            .collect();
        if let Ok(controller) = t.controller() {
            now.push(("controller".to_string(), controller.process().rss_bytes()));
        }
        for (name, rss) in now {
            let Some(rss) = rss else { continue };
            self.tracks
                .entry(name)
                .and_modify(|t| {
                    t.end = rss;
                    t.max = t.max.max(rss);
                })
                .or_insert(Track {
                    start: rss,
                    end: rss,
                    max: rss,
                });
        }
    }

    pub fn table(&self) -> String {
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let mut text = String::new();
        for (name, t) in &self.tracks {
            let _ = writeln!(
                text,
                "  {name:<24} start {:7.1}  end {:7.1}  max {:7.1}",
                mib(t.start),
                mib(t.end),
                mib(t.max)
            );
        }
        let _ = writeln!(
            text,
            "  (bound: end - start <= {:.0} MiB)",
            mib(GROWTH_BOUND)
        );
        text
    }

    pub fn violations(&self) -> Vec<String> {
        self.tracks
            .iter()
            .filter(|(_, t)| t.end > t.start + GROWTH_BOUND)
            .map(|(name, t)| format!("{name} grew from {} to {} MiB", t.start >> 20, t.end >> 20))
            .collect()
    }
}
