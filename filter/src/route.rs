//! The per-request decisions of the filter, free of Envoy: the effective health of a
//! target, where to send a request, and where (if anywhere) to replay a failed attempt.

use crate::eject::Ejections;
use crate::health::{Health, merge};
use crate::select::{Decision, Why, select};
use crate::table::{Scheme, Target};

/// Effective health at one instant: the controller's word (which already holds a
/// recovered target back for `failback.stableFor`) merged with this Envoy's passive
/// ejections.
#[derive(Clone, Copy)]
pub struct HealthView<'a> {
    pub ejections: &'a Ejections,
    pub now_ms: u64,
}

impl HealthView<'_> {
    pub fn of(&self, target: &Target) -> Health {
        merge(
            target.health,
            self.ejections
                .is_ejected(&target.envoy_cluster, self.now_ms),
        )
    }
}

/// Where one request goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan<'t> {
    pub decision: Decision<'t>,
    /// The Envoy cluster to put in the route header; `None` leaves the route alone.
    pub reroute: Option<&'t str>,
}

impl<'t> Plan<'t> {
    /// The target this request is attempted on, by its name in the table (ejections and
    /// replay exclusions use that name, even when the route knows the primary under
    /// another one, such as Istio's).
    pub fn attempted(&self) -> &'t str {
        &self.decision.target.envoy_cluster
    }
}

/// Plans a request the route sent to `route_cluster` (the scheme's primary under one of
/// its names). The primary itself is reached through the route as Envoy chose it, so the
/// route header is set only when another target is chosen.
pub fn plan<'t>(
    scheme: &'t Scheme,
    route_cluster: &str,
    health: &HealthView<'_>,
    pick: u32,
) -> Option<Plan<'t>> {
    let decision = select(scheme, |t| health.of(t), None, pick)?;
    let is_primary = scheme
        .primary()
        .is_some_and(|p| std::ptr::eq(p, decision.target));
    let reroute = (!is_primary && decision.target.envoy_cluster != route_cluster)
        .then_some(decision.target.envoy_cluster.as_str());
    Some(Plan { decision, reroute })
}

/// The target a failed attempt on `failed` is replayed to: the next choice with `failed`
/// excluded, provided it is not known to be down. (Replaying to a target every signal
/// says is Unhealthy only adds latency before the same 503: both gateways down must
/// answer promptly.)
pub fn replay_target<'t>(
    scheme: &'t Scheme,
    failed: &str,
    health: &HealthView<'_>,
    pick: u32,
) -> Option<Decision<'t>> {
    select(scheme, |t| health.of(t), Some(failed), pick)
        .filter(|d| d.why != Why::AllUnhealthyTryingPrimary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Table;
    use crate::table::fixtures::*;
    use Health::*;
    use std::time::Duration;

    fn scheme3(east: Health, west: Health, south: Health) -> Scheme {
        Table::compile(table(vec![scheme(vec![
            vec![target("east", east)],
            vec![target("west", west)],
            vec![target("south", south)],
        ])]))
        .unwrap()
        .schemes
        .remove(0)
    }

    fn view(e: &Ejections) -> HealthView<'_> {
        HealthView {
            ejections: e,
            now_ms: 1_000,
        }
    }

    const EAST: &str = "detour|east|apps|foo";
    const WEST: &str = "detour|west|apps|foo";

    #[test]
    fn a_healthy_primary_keeps_the_route_untouched() {
        let s = scheme3(Healthy, Healthy, Healthy);
        let e = Ejections::default();
        let p = plan(&s, EAST, &view(&e), 0).unwrap();
        assert_eq!(p.reroute, None);
        assert_eq!(p.attempted(), EAST);
        // Under another name of the primary (Istio's), still untouched, and a failure
        // is still the primary's, under its name in the table.
        let istio = "outbound|8080||foo.apps.svc.cluster.local";
        let p = plan(&s, istio, &view(&e), 0).unwrap();
        assert_eq!(p.reroute, None);
        assert_eq!(p.attempted(), EAST);
    }

    #[test]
    fn an_ejected_primary_is_rerouted_to_the_first_healthy_group() {
        let s = scheme3(Healthy, Healthy, Healthy);
        let mut e = Ejections::default();
        e.eject(EAST, 900, Duration::from_secs(2), Duration::from_secs(8));
        let p = plan(&s, EAST, &view(&e), 0).unwrap();
        assert_eq!(p.reroute, Some(WEST));
        assert_eq!(p.decision.group, 1);
        assert_eq!(p.attempted(), WEST);
    }

    #[test]
    fn a_replay_never_goes_to_the_failed_target_nor_to_a_known_dead_one() {
        let s = scheme3(Unhealthy, Healthy, Healthy);
        let e = Ejections::default();
        let d = replay_target(&s, WEST, &view(&e), 0).unwrap();
        assert_eq!(d.target.cluster, "south");
        // Both gateways down (and the primary too): no replay, answer at once.
        let s = scheme3(Unhealthy, Healthy, Unhealthy);
        assert!(replay_target(&s, WEST, &view(&e), 0).is_none());
        // Primary failed, the failover target is Unknown: worth one try.
        let s = scheme3(Healthy, Unknown, Unhealthy);
        let d = replay_target(&s, EAST, &view(&e), 0).unwrap();
        assert_eq!(d.target.cluster, "west");
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod properties {
    use super::*;
    use crate::table::Table;
    use crate::table::fixtures::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn health() -> impl Strategy<Value = Health> {
        prop_oneof![
            Just(Health::Healthy),
            Just(Health::Unhealthy),
            Just(Health::Unknown)
        ]
    }

    proptest! {
        /// Whatever the health and ejections: the route header never names the primary,
        /// a replay never goes to the failed target nor to one known to be down.
        #[test]
        fn plans_and_replays_keep_their_promises(
            healths in prop::collection::vec(health(), 1..6),
            ejected in prop::collection::vec(any::<bool>(), 6),
            failed_index in any::<prop::sample::Index>(),
            pick in any::<u32>(),
        ) {
            let groups = healths
                .iter()
                .enumerate()
                .map(|(i, h)| vec![target(&format!("c{i}"), *h)])
                .collect();
            let s = Table::compile(table(vec![scheme(groups)])).unwrap().schemes.remove(0);
            let mut e = Ejections::default();
            for (i, _) in ejected.iter().enumerate().filter(|(i, x)| **x && *i < healths.len()) {
                e.eject(&format!("detour|c{i}|apps|foo"), 0, Duration::from_secs(5), Duration::from_secs(5));
            }
            let view = HealthView { ejections: &e, now_ms: 1 };
            let primary = s.primary().unwrap().envoy_cluster.clone();

            let p = plan(&s, &primary, &view, pick).unwrap();
            prop_assert_ne!(p.reroute, Some(primary.as_str()));
            prop_assert_eq!(p.reroute.is_some(), p.decision.group > 0);

            let failed = s.groups[failed_index.index(s.groups.len())][0].envoy_cluster.clone();
            if let Some(d) = replay_target(&s, &failed, &view, pick) {
                prop_assert_ne!(&d.target.envoy_cluster, &failed);
                prop_assert_ne!(view.of(d.target), Health::Unhealthy);
            }
        }
    }
}
