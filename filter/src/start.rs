//! Where each scheme's requests start, decided once per change rather than per request.
//!
//! The filter decides only where a request *starts*: the first priority group with a
//! healthy target, from the controller's table and this Envoy's own ejections. Envoy's
//! router carries it from there (another instance, then the next group). Both inputs
//! change rarely — a new table version, an ejection made or run out — so a worker
//! computes [`Starts`] when they change and a request only looks its scheme up. While
//! nothing is degraded ([`Starts::quiet`]), a request is not even looked up: the filter
//! then costs what an empty filter costs.

use crate::eject::Ejections;
use crate::health::merge;
use crate::select::{Why, select};
use crate::table::{Scheme, Table};

/// One scheme's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Start {
    /// 0 = the primary; n = the nth failover group.
    pub group: usize,
    pub why: Option<Why>,
}

/// The start of every scheme of one table at one instant. The default (no table yet) is
/// quiet: every request goes where its route sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Starts {
    by_scheme: Vec<Start>,
    /// No scheme starts past its primary.
    quiet: bool,
    /// When the answer may change though neither input did: the end of the earliest
    /// running ejection.
    pub recompute_at_ms: Option<u64>,
}

impl Default for Starts {
    fn default() -> Starts {
        Starts {
            by_scheme: Vec::new(),
            quiet: true,
            recompute_at_ms: None,
        }
    }
}

impl Starts {
    /// Starts of `table` at `now_ms`, with this Envoy's `ejections`.
    pub fn compute(table: &Table, ejections: &Ejections, now_ms: u64) -> Starts {
        let recompute_at_ms = ejections
            .entries
            .iter()
            .map(|e| e.until_ms)
            .filter(|&until| until > now_ms)
            .min();
        let by_scheme: Vec<Start> = table
            .schemes
            .iter()
            .map(|scheme| start_of(scheme, ejections, now_ms))
            .collect();
        let quiet = by_scheme.iter().all(|s| s.group == 0);
        Starts {
            by_scheme,
            quiet,
            recompute_at_ms,
        }
    }

    /// Nothing to do per request: every scheme starts at its primary.
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    pub fn of(&self, scheme: usize) -> Start {
        self.by_scheme.get(scheme).copied().unwrap_or_default()
    }

    /// Is it time to compute again?
    pub fn stale_at(&self, now_ms: u64) -> bool {
        self.recompute_at_ms.is_some_and(|at| now_ms >= at)
    }
}

/// The first group with a healthy target: the same rule as `detour explain`
/// ([`select`]), which also decides what happens when nothing is healthy.
fn start_of(scheme: &Scheme, ejections: &Ejections, now_ms: u64) -> Start {
    let decision = select(
        scheme,
        |t| merge(t.health, ejections.is_ejected(&t.envoy_cluster, now_ms)),
        None,
        0,
    );
    match decision {
        Some(d) => Start {
            group: d.group,
            why: Some(d.why),
        },
        None => Start::default(),
    }
}

/// The group of `scheme` whose target is the Envoy cluster `envoy_cluster` (group 0 under
/// any of the names the route knows the primary by: `is_primary`).
pub fn group_of(scheme: &Scheme, envoy_cluster: &str, is_primary: bool) -> Option<usize> {
    if is_primary {
        return Some(0);
    }
    scheme
        .targets()
        .find(|(_, t)| t.envoy_cluster == envoy_cluster)
        .map(|(group, _)| group)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::health::Health::{self, *};
    use crate::table::fixtures::*;
    use std::time::Duration;

    const EAST: &str = "detour|east|apps|foo";
    const WEST: &str = "detour|west|apps|foo";

    fn table3(east: Health, west: Health, south: Health) -> Table {
        Table::compile(table(vec![scheme(vec![
            vec![target("east", east)],
            vec![target("west", west)],
            vec![target("south", south)],
        ])]))
        .unwrap()
    }

    #[test]
    fn a_healthy_table_is_quiet() {
        let s = Starts::compute(
            &table3(Healthy, Healthy, Healthy),
            &Ejections::default(),
            1_000,
        );
        assert!(s.quiet());
        assert_eq!(s.of(0).group, 0);
        assert_eq!(s.recompute_at_ms, None);
    }

    #[test]
    fn the_first_group_with_a_healthy_target_is_the_start() {
        let s = Starts::compute(
            &table3(Unhealthy, Unhealthy, Healthy),
            &Ejections::default(),
            1_000,
        );
        assert!(!s.quiet());
        assert_eq!(s.of(0).group, 2);
        assert_eq!(s.of(0).why, Some(Why::FailedOver));
        // Nothing healthy, nothing known: the primary, as `explain` says.
        let s = Starts::compute(
            &table3(Unhealthy, Unhealthy, Unhealthy),
            &Ejections::default(),
            1_000,
        );
        assert_eq!(s.of(0).group, 0);
        assert_eq!(s.of(0).why, Some(Why::AllUnhealthyTryingPrimary));
    }

    #[test]
    fn an_ejection_moves_the_start_until_it_runs_out() {
        let t = table3(Healthy, Healthy, Healthy);
        let mut e = Ejections::default();
        e.eject(EAST, 1_000, Duration::from_secs(2), Duration::from_secs(60));
        let s = Starts::compute(&t, &e, 1_500);
        assert_eq!(s.of(0).group, 1);
        assert!(!s.quiet());
        assert_eq!(s.recompute_at_ms, Some(3_000));
        assert!(s.stale_at(3_000));
        let s = Starts::compute(&t, &e, 3_000);
        assert_eq!(s.of(0).group, 0);
        assert!(s.quiet());
        assert_eq!(s.recompute_at_ms, None);
    }

    #[test]
    fn an_ejection_of_another_schemes_target_leaves_this_one_quiet() {
        let t = table3(Healthy, Healthy, Healthy);
        let mut e = Ejections::default();
        e.eject(
            "detour|east|apps|bar",
            1_000,
            Duration::from_secs(2),
            Duration::from_secs(60),
        );
        let s = Starts::compute(&t, &e, 1_500);
        assert!(s.quiet());
    }

    #[test]
    fn groups_are_found_by_envoy_cluster() {
        let t = table3(Healthy, Healthy, Healthy);
        let scheme = &t.schemes[0];
        assert_eq!(group_of(scheme, WEST, false), Some(1));
        assert_eq!(group_of(scheme, EAST, false), Some(0));
        assert_eq!(group_of(scheme, "outbound|8080||foo", true), Some(0));
        assert_eq!(group_of(scheme, "elsewhere", false), None);
    }
}
