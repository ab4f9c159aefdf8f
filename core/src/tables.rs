//! The priority tables (the filter's wire types): each target's published health, one
//! scheme as a table entry, a table stamped with its version. [`crate::decide`] builds
//! them.
//!
//! A cluster's table lists the schemes whose primary runs there: group 0 is the primary,
//! group n the nth failover group. Its version is a hash of its content, so it changes
//! exactly when the content does, and every replica (or a restarted controller) gives the
//! same table the same ETag.

use crate::health::HealthMap;
use crate::model::{
    Model, Scheme, TargetRef, gloo_edge_cluster, gloo_service_clusters, istio_cluster,
    kgateway_cluster,
};
use bytes::Bytes;
use detour_filter::health::Health;
use detour_filter::table::wire::{FailbackDoc, ReplayDoc, SchemeDoc, TableDoc, TargetDoc};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// A table as served: the document and its JSON, serialised once per version.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedTable {
    pub doc: TableDoc,
    pub json: Bytes,
}

impl PublishedTable {
    /// Stamps `doc` with its content version and serialises it.
    pub fn new(mut doc: TableDoc) -> PublishedTable {
        doc.version = String::new();
        // Serialising plain structs with string keys cannot fail.
        let unversioned = serde_json::to_vec(&doc).unwrap_or_default();
        doc.version = format!("{:016x}", fnv1a(&unversioned));
        let json = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
        PublishedTable { doc, json }
    }

    pub fn version(&self) -> &str {
        &self.doc.version
    }
}

/// Every member cluster's current table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableSet {
    pub tables: BTreeMap<String, Arc<PublishedTable>>,
    /// The size of each cluster's newest table, served or not (see [`TableSize`]).
    pub sizes: BTreeMap<String, TableSize>,
}

/// A cluster's newest table against the filters' `maxTableBytes`: a filter refuses a
/// larger table (and keeps its last good one), so the controller must not serve it and
/// must say so before it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSize {
    /// Bytes of the newest table built (its JSON, as served).
    pub bytes: usize,
    /// The filters' limit (the controller's `--max-table-bytes`).
    pub max: usize,
}

impl TableSize {
    /// Past 80% of the limit: a few more schemes and it would be refused.
    pub fn near_limit(&self) -> bool {
        self.bytes.saturating_mul(5) > self.max.saturating_mul(4)
    }

    /// Over the limit: not served; the cluster's last good table stays.
    pub fn over_limit(&self) -> bool {
        self.bytes > self.max
    }

    /// The table's size in whole percent of the limit, rounded up (so 100 and below
    /// is served).
    pub fn percent(&self) -> u32 {
        let percent = self.bytes.saturating_mul(100).div_ceil(self.max.max(1));
        u32::try_from(percent).unwrap_or(u32::MAX)
    }

    /// Where the table stands against the limit, when past 80%: "N% of the filters'
    /// maxTableBytes (M): <what follows>". `place` says where the schemes to split have
    /// their primary ("in east", "here"). One text for the log, the status API and the
    /// MemberCluster status; percent only, so that a status does not change with every
    /// byte.
    pub fn limit_note(&self, place: &str) -> Option<String> {
        let follows = if self.over_limit() {
            format!(
                "it is not served and the last good table stays; split the schemes whose primary runs {place} or raise --max-table-bytes with the filters' maxTableBytes"
            )
        } else if self.near_limit() {
            "past it, it will not be served".to_string()
        } else {
            return None;
        };
        Some(format!(
            "{}% of the filters' maxTableBytes ({}): {follows}",
            self.percent(),
            self.max
        ))
    }

    /// What an operator should read about it, when anything (log, status API).
    pub fn warning(&self, cluster: &str) -> Option<String> {
        let note = self.limit_note(&format!("in {cluster}"))?;
        Some(format!(
            "the table of {cluster} is {} bytes, {note}",
            self.bytes
        ))
    }
}

impl TableSet {
    pub fn get(&self, cluster: &str) -> Option<&Arc<PublishedTable>> {
        self.tables.get(cluster)
    }

    pub fn size(&self, cluster: &str) -> Option<&TableSize> {
        self.sizes.get(cluster)
    }
}

/// A target's health as a scheme's table gives it, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveHealth {
    pub health: Health,
    pub why: HealthBasis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthBasis {
    /// The service has no ready endpoint in its cluster (Kubernetes discovery).
    NoReadyEndpoints,
    /// Not checked yet.
    Unchecked,
    /// The checks' verdict, reached at `since`.
    Checked { since: SystemTime },
    /// Healthy again, but reported Unhealthy until the failback window ends at `until`.
    Recovering { until: Instant },
}

/// The health `scheme`'s table gives `target` as of `now`: the active checks' verdict
/// with failback damping, except that a service known to have no ready endpoint is
/// Unhealthy at once, without waiting for probes to fail through its gateway. File mode
/// never has such a service (validation requires endpoints), so the rule is harmless there.
pub fn target_health(
    model: &Model,
    scheme: &Scheme,
    target: &TargetRef,
    board: &HealthMap,
    now: Instant,
) -> EffectiveHealth {
    let service = model
        .cluster(&target.cluster)
        .and_then(|c| c.services.get(&target.service));
    if service.is_some_and(|s| s.endpoints.is_empty()) {
        return EffectiveHealth {
            health: Health::Unhealthy,
            why: HealthBasis::NoReadyEndpoints,
        };
    }
    let state = model
        .probe_spec(scheme, target)
        .and_then(|spec| board.get(&spec));
    let Some(state) = state else {
        return EffectiveHealth {
            health: Health::Unknown,
            why: HealthBasis::Unchecked,
        };
    };
    match state.effective(scheme.failback.stable_for, now) {
        (health, Some(until)) => EffectiveHealth {
            health,
            why: HealthBasis::Recovering { until },
        },
        (health, None) if state.checks == 0 => EffectiveHealth {
            health,
            why: HealthBasis::Unchecked,
        },
        (health, None) => EffectiveHealth {
            health,
            why: HealthBasis::Checked {
                since: state.since_wall,
            },
        },
    }
}

/// The health `scheme`'s table publishes for `target`: [`target_health`], except that
///
/// * while the primary has no verdict yet (a controller that just started, a scheme just
///   added) every target is published as Unknown. Otherwise a failover target checked a
///   moment before the primary would pull traffic away from a primary that is fine
///   (Unknown is not Healthy); with everything Unknown the filter keeps sending to the
///   primary, and its own passive detection still covers a primary that is really down;
/// * a target in the table's own cluster (the primary's) whose checks failed only because
///   its gateway gave no answer is published Healthy: that cluster's Envoy reaches it
///   without the gateway, and its own per-instance state and passive detection judge it
///   (a gateway is not the service it fronts). Its checks' verdict still shows in status.
pub fn published_health(
    model: &Model,
    scheme: &Scheme,
    target: &TargetRef,
    board: &HealthMap,
    now: Instant,
) -> EffectiveHealth {
    let primary = target_health(model, scheme, &scheme.primary, board, now);
    if primary.why == HealthBasis::Unchecked {
        return EffectiveHealth {
            health: Health::Unknown,
            why: HealthBasis::Unchecked,
        };
    }
    let effective = target_health(model, scheme, target, board, now);
    let gateway_only = || {
        model
            .probe_spec(scheme, target)
            .and_then(|spec| board.get(&spec))
            .is_some_and(|state| state.failed_behind_gateway())
    };
    match effective.why {
        HealthBasis::Checked { .. } | HealthBasis::Recovering { .. }
            if target.cluster == scheme.primary.cluster
                && effective.health != Health::Healthy
                && gateway_only() =>
        {
            EffectiveHealth {
                health: Health::Healthy,
                ..effective
            }
        }
        _ => effective,
    }
}

/// One scheme as a table entry, each target's health given by `health`.
pub fn scheme_doc(
    model: &Model,
    scheme: &Scheme,
    mut health: impl FnMut(&TargetRef) -> Health,
) -> SchemeDoc {
    let mut target = |t: &TargetRef, weight: u32| TargetDoc {
        cluster: t.cluster.clone(),
        service: t.service.to_string(),
        envoy_cluster: t.envoy_cluster(),
        weight,
        health: health(t),
    };
    let mut groups = vec![vec![target(&scheme.primary, 1)]];
    for g in &scheme.groups {
        groups.push(g.iter().map(|w| target(&w.target, w.weight)).collect());
    }
    let mut envoy_clusters = vec![scheme.primary.envoy_cluster()];
    let port = model
        .cluster(&scheme.primary.cluster)
        .and_then(|c| c.services.get(&scheme.primary.service))
        .map(|s| s.port);
    // The names each data plane routes the primary under: Istio's sidecar, Gloo Edge
    // (its discovered Upstream), Gloo (the Service as a route's destination) and
    // kgateway (the Service as a Gateway API backend).
    if let Some(port) = port {
        let service = &scheme.primary.service;
        envoy_clusters.push(istio_cluster(service, port));
        envoy_clusters.extend(gloo_edge_cluster(service, port));
        envoy_clusters.extend(gloo_service_clusters(service, port));
        envoy_clusters.push(kgateway_cluster(service, port));
    }
    SchemeDoc {
        name: scheme.id(),
        envoy_clusters,
        groups,
        replay: ReplayDoc {
            methods: scheme.replay.methods.clone(),
            max_body_bytes: scheme.replay.max_body_bytes,
        },
        failback: FailbackDoc {
            stable_for_ms: u64::try_from(scheme.failback.stable_for.as_millis())
                .unwrap_or(u64::MAX),
        },
    }
}

/// FNV-1a, 64 bits: stable across builds and platforms (unlike std's hasher), which is
/// what an ETag shared by replicas needs; collisions only matter between two versions of
/// one cluster's table.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::decide;
    use crate::health::state::TargetState;
    use crate::testing::example_model;
    use detour_filter::table::{DEFAULT_MAX_TABLE_BYTES, Table};
    use std::collections::HashMap;
    use std::time::Duration;

    fn state_of<'b>(model: &Model, board: &'b mut HealthMap, cluster: &str) -> &'b mut TargetState {
        let scheme = &model.schemes[0];
        let target = scheme.targets().find(|t| t.cluster == cluster).unwrap();
        let spec = model.probe_spec(scheme, target).unwrap();
        board
            .entry(spec)
            .or_insert_with(|| TargetState::new(Instant::now()))
    }

    #[test]
    fn each_cluster_gets_the_schemes_of_its_primaries() {
        let model = example_model();
        let built = decide(&model, &HashMap::new(), Instant::now());
        assert_eq!(
            built.tables.keys().collect::<Vec<_>>(),
            ["east", "south", "west"]
        );
        assert!(built.tables["west"].schemes.is_empty());
        let east = &built.tables["east"];
        let s = &east.schemes[0];
        assert_eq!(s.name, "apps/foo");
        assert_eq!(
            s.envoy_clusters,
            [
                "detour|east|apps|foo",
                "outbound|8080||foo.apps.svc.cluster.local",
                "apps-foo-8080_gloo-system",
                "kube-svc:apps-foo-8080_apps",
                "kube-svc:apps-foo-8080_apps_apps_foo_8080",
                "kube_apps_foo_8080",
            ]
        );
        let clusters: Vec<Vec<&str>> = s
            .groups
            .iter()
            .map(|g| g.iter().map(|t| t.envoy_cluster.as_str()).collect())
            .collect();
        assert_eq!(
            clusters,
            [
                ["detour|east|apps|foo"],
                ["detour|west|apps|foo"],
                ["detour|south|apps|foo"]
            ]
        );
        assert!(
            s.groups
                .iter()
                .flatten()
                .all(|t| t.health == Health::Unknown && t.weight == 1)
        );
        assert_eq!(s.failback.stable_for_ms, 10_000);
        assert_eq!(s.replay.max_body_bytes, 65536);
        assert_eq!(
            s.replay.methods,
            ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]
        );
    }

    #[test]
    fn the_filter_accepts_the_published_json() {
        let model = example_model();
        let built = decide(&model, &HashMap::new(), Instant::now());
        let table = PublishedTable::new(built.tables["east"].clone());
        let parsed = Table::parse(&table.json, "east", DEFAULT_MAX_TABLE_BYTES).unwrap();
        assert_eq!(parsed.version, table.version());
        assert!(parsed.scheme_for("detour|east|apps|foo").is_some());
        for name in [
            "outbound|8080||foo.apps.svc.cluster.local",
            "apps-foo-8080_gloo-system",
            "kube-svc:apps-foo-8080_apps",
            "kube-svc:apps-foo-8080_apps_apps_foo_8080",
            "kube_apps_foo_8080",
        ] {
            assert_eq!(
                parsed.scheme_for(name).map(|s| s.name.as_str()),
                Some("apps/foo"),
                "{name}"
            );
        }
    }

    #[test]
    fn versions_follow_content_only() {
        let model = example_model();
        let mut board = HashMap::new();
        let now = Instant::now();
        let v = |board: &HealthMap| {
            PublishedTable::new(decide(&model, board, now).tables["east"].clone())
                .version()
                .to_string()
        };
        let unknown = v(&board);
        assert_eq!(unknown, v(&board), "same content, same version");
        assert_eq!(unknown.len(), 16);
        let p = model.schemes[0].health_check.clone();
        state_of(&model, &mut board, "east").observe(true, &p, now);
        state_of(&model, &mut board, "west").observe(true, &p, now);
        let healthy = v(&board);
        assert_ne!(unknown, healthy);
        // A target of another cluster's scheme changes nothing here... there is none in
        // the example, so check that a check without a transition changes nothing.
        state_of(&model, &mut board, "west").observe(true, &p, now);
        assert_eq!(healthy, v(&board));
    }

    #[test]
    fn until_the_primary_has_a_verdict_its_scheme_keeps_traffic_on_it() {
        let model = example_model();
        let p = model.schemes[0].health_check.clone();
        let mut board = HashMap::new();
        let now = Instant::now();
        // West's first check came back before east's: publishing it as Healthy would
        // send east's traffic to west (the primary is Unknown, and Unknown is not Healthy).
        state_of(&model, &mut board, "west").observe(true, &p, now);
        let healths = |board: &HealthMap| -> Vec<Health> {
            decide(&model, board, now).tables["east"].schemes[0]
                .groups
                .iter()
                .flatten()
                .map(|t| t.health)
                .collect()
        };
        assert_eq!(healths(&board), [Health::Unknown; 3]);
        // Once east has its verdict, every target is published as checked.
        state_of(&model, &mut board, "east").observe(true, &p, now);
        assert_eq!(
            healths(&board),
            [Health::Healthy, Health::Healthy, Health::Unknown]
        );
        // The status page decides on the published health too: the primary is active.
        let mut fresh = HashMap::new();
        state_of(&model, &mut fresh, "west").observe(true, &p, now);
        let view = decide(&model, &fresh, now).views.remove(0);
        assert_eq!(view.active_group, 0);
    }

    #[test]
    fn a_recovered_target_stays_unhealthy_until_stable_for_has_passed() {
        let model = example_model();
        let stable_for = model.schemes[0].failback.stable_for;
        let p = model.schemes[0].health_check.clone();
        let mut board = HashMap::new();
        let t0 = Instant::now();
        let east = state_of(&model, &mut board, "east");
        east.observe(true, &p, t0);
        for _ in 0..p.unhealthy_threshold {
            east.observe(false, &p, t0);
        }
        let back = t0 + Duration::from_secs(1);
        for _ in 0..p.healthy_threshold {
            east.observe(true, &p, back);
        }
        let primary =
            |built: &crate::decide::Decision| built.tables["east"].schemes[0].groups[0][0].health;
        let damped = decide(&model, &board, back + Duration::from_secs(2));
        assert_eq!(primary(&damped), Health::Unhealthy);
        assert_eq!(damped.next_change, Some(back + stable_for));
        let after = decide(&model, &board, back + stable_for);
        assert_eq!(primary(&after), Health::Healthy);
        assert_eq!(after.next_change, None);
    }

    #[test]
    fn a_gateway_is_not_the_service_it_fronts() {
        use crate::health::state::{Cause, Check};
        let model = example_model();
        let p = model.schemes[0].health_check.clone();
        let mut board = HashMap::new();
        let now = Instant::now();
        let gateway_down = Check::Failed(Cause::Gateway);
        state_of(&model, &mut board, "west").observe(true, &p, now);
        // East's gateway never answered (not listening yet): east stays Unknown, and in
        // east's own table it is what east's Envoy should keep using.
        for _ in 0..3 {
            state_of(&model, &mut board, "east").observe(gateway_down, &p, now);
        }
        let healths = |board: &HealthMap| -> Vec<Health> {
            decide(&model, board, now).tables["east"].schemes[0]
                .groups
                .iter()
                .flatten()
                .map(|t| t.health)
                .collect()
        };
        assert_eq!(healths(&board)[0], Health::Healthy);
        let view = decide(&model, &board, now).views.remove(0);
        assert_eq!(view.active_group, 0);
        // Its service then answers, then the gateway dies: still east's traffic stays.
        state_of(&model, &mut board, "east").observe(true, &p, now);
        for _ in 0..3 {
            state_of(&model, &mut board, "east").observe(gateway_down, &p, now);
        }
        assert_eq!(
            state_of(&model, &mut board, "east").health,
            Health::Unhealthy
        );
        assert_eq!(healths(&board)[0], Health::Healthy);
        // But a gateway that answers that the service failed: east's traffic leaves.
        for _ in 0..3 {
            state_of(&model, &mut board, "east").observe(false, &p, now);
        }
        assert_eq!(healths(&board)[0], Health::Unhealthy);
        let view = decide(&model, &board, now).views.remove(0);
        assert_eq!(view.active_group, 1);
    }
}
