//! The filter's Envoy stats (names and meaning: `crate::metrics`). Every VM defines the
//! same names; Envoy backs equal names with one stat, so counters add up over workers
//! and a gauge holds whichever VM set it last (they all set the same value).

use crate::metrics::{FETCH_ERRORS, TABLE_REJECTIONS, failover_counter};
use crate::table::Table;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::collections::HashMap;

/// A defined metric; `None` when Envoy refused to define it (the stat is then skipped,
/// never the request).
#[derive(Debug, Clone, Copy, Default)]
pub struct Metric(Option<u32>);

impl Metric {
    fn define(kind: MetricType, name: &str) -> Metric {
        Metric(hostcalls::define_metric(kind, name).ok())
    }

    pub fn increment(self) {
        if let Some(id) = self.0 {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    pub fn set(self, value: u64) {
        if let Some(id) = self.0 {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}

pub struct Stats {
    pub ejections: Metric,
    pub headers_stripped: Metric,
    pub table_version: Metric,
    pub table_age_seconds: Metric,
    table_rejected: [Metric; TABLE_REJECTIONS.len()],
    fetch_error: [Metric; FETCH_ERRORS.len()],
}

impl Stats {
    pub fn define() -> Stats {
        let counter = |name: &str| Metric::define(MetricType::Counter, name);
        let gauge = |name: &str| Metric::define(MetricType::Gauge, name);
        Stats {
            ejections: counter("detour.ejections"),
            headers_stripped: counter("detour.headers_stripped"),
            table_version: gauge("detour.table.version"),
            table_age_seconds: gauge("detour.table.age_seconds"),
            table_rejected: TABLE_REJECTIONS
                .map(|l| counter(&format!("detour.table.rejected.{l}"))),
            fetch_error: FETCH_ERRORS.map(|l| counter(&format!("detour.fetch.error.{l}"))),
        }
    }

    pub fn table_rejected(&self, label: &str) -> Metric {
        find(&TABLE_REJECTIONS, &self.table_rejected, label)
    }

    pub fn fetch_error(&self, label: &str) -> Metric {
        find(&FETCH_ERRORS, &self.fetch_error, label)
    }
}

fn find(labels: &[&str], metrics: &[Metric], label: &str) -> Metric {
    labels
        .iter()
        .position(|l| *l == label)
        .and_then(|i| metrics.get(i).copied())
        .unwrap_or_default()
}

/// The per-scheme, per-group failover counters of one table, resolved when the table is
/// adopted (not on the request path). Names already defined by this VM are reused, so
/// table updates do not define them again.
#[derive(Default)]
pub struct FailoverCounters {
    defined: HashMap<String, Metric>,
}

impl FailoverCounters {
    /// `counters[scheme][group]` for `table` (group 0, the primary, has none).
    pub fn for_table(&mut self, table: &Table) -> Vec<Vec<Metric>> {
        table
            .schemes
            .iter()
            .map(|scheme| {
                (0..scheme.groups.len())
                    .map(|group| {
                        if group == 0 {
                            return Metric::default();
                        }
                        let name = failover_counter(&scheme.name, group);
                        *self
                            .defined
                            .entry(name)
                            .or_insert_with_key(|name| Metric::define(MetricType::Counter, name))
                    })
                    .collect()
            })
            .collect()
    }
}
