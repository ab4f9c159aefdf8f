//! Where a request for a scheme's primary goes right now. The filter calls this on every
//! request of a scheme; `detour explain` calls it to tell an operator the same answer.
//!
//! Rule: walk the groups in the order the operator wrote them (group 0 is the primary)
//! and take the first group with a Healthy target; pick among its Healthy targets by
//! weight. Unknown is not Healthy, so only when no target anywhere is Healthy do Unknown
//! targets get traffic (first in order). When every target is Unhealthy the request goes
//! to the primary anyway: the local attempt costs nothing, fails fast if the service is
//! really down, and keeps a controller whose probes are broken from blackholing traffic.

use crate::health::Health;
use crate::table::{Scheme, Target};
use std::fmt;

/// Why the selection chose what it chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The primary is Healthy.
    PrimaryHealthy,
    /// Every earlier group had no usable Healthy target.
    FailedOver,
    /// No target is Healthy; this is the first Unknown one in priority order.
    NothingHealthyTryingUnknown,
    /// Every target is Unhealthy; the primary is tried as the last resort.
    AllUnhealthyTryingPrimary,
}

impl Why {
    pub fn label(self) -> &'static str {
        match self {
            Why::PrimaryHealthy => "primary-healthy",
            Why::FailedOver => "failed-over",
            Why::NothingHealthyTryingUnknown => "nothing-healthy-trying-unknown",
            Why::AllUnhealthyTryingPrimary => "all-unhealthy-trying-primary",
        }
    }
}

/// The chosen target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision<'t> {
    /// 0 = primary, n = nth failover group.
    pub group: usize,
    pub target: &'t Target,
    pub why: Why,
}

impl Decision<'_> {
    /// True when the request leaves its primary.
    pub fn is_failover(&self) -> bool {
        self.group > 0
    }
}

/// Chooses a target of `scheme`.
///
/// * `health` gives each target's effective health (controller's word merged with this
///   Envoy's passive ejections).
/// * `exclude` names an Envoy cluster that must not be chosen (the one that just failed,
///   when replaying).
/// * `pick` is any number that varies between requests; it spreads load by weight.
///
/// Returns `None` only when every candidate is excluded.
pub fn select<'t>(
    scheme: &'t Scheme,
    health: impl Fn(&Target) -> Health,
    exclude: Option<&str>,
    pick: u32,
) -> Option<Decision<'t>> {
    let usable = |t: &Target| exclude != Some(t.envoy_cluster.as_str());
    for wanted in [Health::Healthy, Health::Unknown] {
        for (group, targets) in scheme.groups.iter().enumerate() {
            let chosen = pick_weighted(
                targets.iter().filter(|t| usable(t) && health(t) == wanted),
                pick,
            );
            if let Some(target) = chosen {
                let why = match (wanted, group) {
                    (Health::Healthy, 0) => Why::PrimaryHealthy,
                    (Health::Healthy, _) => Why::FailedOver,
                    _ => Why::NothingHealthyTryingUnknown,
                };
                return Some(Decision { group, target, why });
            }
        }
    }
    scheme
        .primary()
        .filter(|t| usable(t))
        .map(|target| Decision {
            group: 0,
            target,
            why: Why::AllUnhealthyTryingPrimary,
        })
}

/// Weighted choice among `candidates`; equal shares when every weight is zero.
fn pick_weighted<'t>(
    candidates: impl Iterator<Item = &'t Target> + Clone,
    pick: u32,
) -> Option<&'t Target> {
    let (count, total) = candidates
        .clone()
        .fold((0u32, 0u64), |(n, w), t| (n + 1, w + u64::from(t.weight)));
    if count == 0 {
        return None;
    }
    if total == 0 {
        return candidates.clone().nth((pick % count) as usize);
    }
    let mut point = u64::from(pick) % total;
    for t in candidates {
        let w = u64::from(t.weight);
        if point < w {
            return Some(t);
        }
        point -= w;
    }
    None
}

/// A human account of a decision, for `detour explain` and logs.
pub struct Explanation<'a, 't> {
    pub scheme: &'t Scheme,
    pub decision: Option<Decision<'t>>,
    pub health: &'a dyn Fn(&Target) -> Health,
}

impl fmt::Display for Explanation<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(d) = self.decision else {
            return writeln!(f, "no target can be chosen (every target is excluded)");
        };
        let target = d.target;
        let place = if d.group == 0 {
            "the primary".to_string()
        } else {
            format!("failover group {}", d.group)
        };
        writeln!(
            f,
            "route to {} ({}) in cluster {} (Envoy cluster {}), {place}",
            target.service,
            (self.health)(target),
            target.cluster,
            target.envoy_cluster
        )?;
        let because = match d.why {
            Why::PrimaryHealthy => "the primary is Healthy".to_string(),
            Why::FailedOver => format!(
                "no earlier group has a Healthy target; group {} is the first that does",
                d.group
            ),
            Why::NothingHealthyTryingUnknown => {
                "no target is Healthy; this is the first target whose health is Unknown".to_string()
            }
            Why::AllUnhealthyTryingPrimary => {
                "every target is Unhealthy; the primary is tried as the last resort".to_string()
            }
        };
        writeln!(f, "because {because}")?;
        for (group, targets) in self.scheme.groups.iter().enumerate() {
            let label = if group == 0 {
                "primary".to_string()
            } else {
                format!("group {group}")
            };
            for t in targets {
                let mark = if std::ptr::eq(t, target) { "→" } else { " " };
                writeln!(
                    f,
                    "  {mark} {label:<8} {:<12} {:<24} weight {:<3} {}",
                    t.cluster,
                    t.service,
                    t.weight,
                    (self.health)(t)
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::table::fixtures::*;
    use crate::table::{Table, wire::TargetDoc};
    use Health::*;

    fn compile(groups: Vec<Vec<TargetDoc>>) -> Scheme {
        Table::compile(table(vec![scheme(groups)]))
            .unwrap()
            .schemes
            .remove(0)
    }

    fn as_reported(t: &Target) -> Health {
        t.health
    }

    fn chosen(s: &Scheme, pick: u32) -> (usize, String, Why) {
        let d = select(s, as_reported, None, pick).unwrap();
        (d.group, d.target.cluster.clone(), d.why)
    }

    #[test]
    fn a_healthy_primary_keeps_its_traffic() {
        let s = compile(vec![
            vec![target("east", Healthy)],
            vec![target("west", Healthy)],
        ]);
        assert_eq!(chosen(&s, 7), (0, "east".into(), Why::PrimaryHealthy));
    }

    #[test]
    fn an_unhealthy_primary_fails_over_in_the_written_order() {
        let s = compile(vec![
            vec![target("east", Unhealthy)],
            vec![target("west", Unhealthy)],
            vec![target("south", Healthy)],
            vec![target("north", Healthy)],
        ]);
        assert_eq!(chosen(&s, 0), (2, "south".into(), Why::FailedOver));
    }

    #[test]
    fn unknown_is_not_healthy() {
        let s = compile(vec![
            vec![target("east", Unknown)],
            vec![target("west", Unknown)],
            vec![target("south", Healthy)],
        ]);
        assert_eq!(chosen(&s, 0), (2, "south".into(), Why::FailedOver));
    }

    #[test]
    fn with_nothing_healthy_the_first_unknown_target_is_tried() {
        let s = compile(vec![
            vec![target("east", Unhealthy)],
            vec![target("west", Unknown)],
            vec![target("south", Unknown)],
        ]);
        assert_eq!(
            chosen(&s, 0),
            (1, "west".into(), Why::NothingHealthyTryingUnknown)
        );
    }

    #[test]
    fn with_everything_down_the_primary_is_the_last_resort() {
        let s = compile(vec![
            vec![target("east", Unhealthy)],
            vec![target("west", Unhealthy)],
        ]);
        assert_eq!(
            chosen(&s, 3),
            (0, "east".into(), Why::AllUnhealthyTryingPrimary)
        );
    }

    #[test]
    fn an_excluded_target_is_never_chosen() {
        let s = compile(vec![
            vec![target("east", Unhealthy)],
            vec![target("west", Healthy)],
            vec![target("south", Healthy)],
        ]);
        let d = select(&s, as_reported, Some("detour|west|apps|foo"), 0).unwrap();
        assert_eq!((d.group, d.target.cluster.as_str()), (2, "south"));
        let only = compile(vec![vec![target("east", Unhealthy)]]);
        assert!(select(&only, as_reported, Some("detour|east|apps|foo"), 0).is_none());
    }

    #[test]
    fn weights_share_a_group_in_proportion() {
        let s = compile(vec![
            vec![target("east", Unhealthy)],
            vec![
                weighted("west", 3, Healthy),
                weighted("south", 1, Healthy),
                weighted("north", 5, Unhealthy),
            ],
        ]);
        let mut west = 0;
        for pick in 0..400 {
            if chosen(&s, pick).1 == "west" {
                west += 1;
            }
        }
        assert_eq!(west, 300, "3:1 between the two Healthy targets");
    }

    #[test]
    fn zero_weights_share_equally() {
        let s = compile(vec![
            vec![target("east", Unhealthy)],
            vec![weighted("west", 0, Healthy), weighted("south", 0, Healthy)],
        ]);
        assert_eq!(chosen(&s, 0).1, "west");
        assert_eq!(chosen(&s, 1).1, "south");
    }

    #[test]
    fn passive_ejection_moves_traffic_before_the_controller_notices() {
        let s = compile(vec![
            vec![target("east", Healthy)],
            vec![target("west", Healthy)],
        ]);
        let ejected = |t: &Target| crate::health::merge(t.health, t.cluster == "east");
        let d = select(&s, ejected, None, 0).unwrap();
        assert_eq!((d.group, d.why), (1, Why::FailedOver));
    }

    #[test]
    fn the_explanation_names_the_choice_and_the_reason() {
        let s = compile(vec![
            vec![target("east", Unhealthy)],
            vec![target("west", Healthy)],
        ]);
        let d = select(&s, as_reported, None, 0);
        let text = Explanation {
            scheme: &s,
            decision: d,
            health: &as_reported,
        }
        .to_string();
        assert!(
            text.contains("route to apps/foo (Healthy) in cluster west"),
            "{text}"
        );
        assert!(text.contains("failover group 1"), "{text}");
        assert!(
            text.contains("no earlier group has a Healthy target"),
            "{text}"
        );
        assert!(text.contains("→ group 1"), "{text}");
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod properties {
    use super::*;
    use crate::table::fixtures::*;
    use crate::table::{Table, wire::TargetDoc};
    use proptest::prelude::*;

    fn health() -> impl Strategy<Value = Health> {
        prop_oneof![
            Just(Health::Healthy),
            Just(Health::Unhealthy),
            Just(Health::Unknown)
        ]
    }

    fn groups() -> impl Strategy<Value = Vec<Vec<TargetDoc>>> {
        prop::collection::vec(prop::collection::vec((0u32..5, health()), 1..4), 1..5).prop_map(
            |groups| {
                let mut n = 0;
                groups
                    .into_iter()
                    .map(|g| {
                        g.into_iter()
                            .map(|(w, h)| {
                                n += 1;
                                weighted(&format!("c{n}"), w, h)
                            })
                            .collect()
                    })
                    .collect()
            },
        )
    }

    proptest! {
        #[test]
        fn selection_respects_priority_and_exclusion(
            groups in groups(),
            pick in any::<u32>(),
            exclude_index in any::<prop::sample::Index>(),
        ) {
            let s = Table::compile(table(vec![scheme(groups)])).unwrap().schemes.remove(0);
            let all: Vec<&Target> = s.targets().map(|(_, t)| t).collect();
            let excluded = all[exclude_index.index(all.len())].envoy_cluster.clone();
            let d = select(&s, |t| t.health, Some(&excluded), pick);
            let Some(d) = d else {
                // Only possible when nothing else is usable: the sole other candidate
                // was excluded and nothing is Healthy or Unknown.
                prop_assert!(s.targets().all(|(_, t)| t.envoy_cluster == excluded
                    || (t.health == Health::Unhealthy)));
                prop_assert_eq!(&s.primary().unwrap().envoy_cluster, &excluded);
                return Ok(());
            };
            prop_assert_ne!(&d.target.envoy_cluster, &excluded);
            match d.why {
                Why::PrimaryHealthy | Why::FailedOver => {
                    prop_assert_eq!(d.target.health, Health::Healthy);
                    // No earlier group had a usable Healthy target.
                    for g in &s.groups[..d.group] {
                        prop_assert!(g.iter().all(|t| t.health != Health::Healthy
                            || t.envoy_cluster == excluded));
                    }
                }
                Why::NothingHealthyTryingUnknown => {
                    prop_assert_eq!(d.target.health, Health::Unknown);
                    prop_assert!(s.targets().all(|(_, t)| t.health != Health::Healthy
                        || t.envoy_cluster == excluded));
                }
                Why::AllUnhealthyTryingPrimary => {
                    prop_assert_eq!(d.group, 0);
                    prop_assert!(s.targets().all(|(_, t)| t.health == Health::Unhealthy
                        || t.envoy_cluster == excluded));
                }
            }
        }
    }
}
