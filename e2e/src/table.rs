//! Controller tables as tests read and write them: the health of a scheme's targets in
//! a table the controller served, and tables made up for a fake controller to serve.

use crate::setup::Setup;
use detour_filter::health::Health;
use detour_filter::table::TABLE_API_VERSION;
use detour_filter::table::wire::{FailbackDoc, ReplayDoc, SchemeDoc, TableDoc, TargetDoc};

/// `(member cluster, health)` of every target of the scheme named `namespace/name`, in
/// priority order (primary first); empty if the table has no such scheme.
pub fn target_health(table: &TableDoc, scheme: &str) -> Vec<(String, Health)> {
    table
        .schemes
        .iter()
        .filter(|s| s.name == scheme)
        .flat_map(|s| s.groups.iter().flatten())
        .map(|t| (t.cluster.clone(), t.health))
        .collect()
}

/// The table a controller would serve to `cluster` for `setup`'s one scheme, with each
/// target's health given by `health_of(member cluster)` — for a fake controller.
pub fn table_for(
    setup: &Setup,
    cluster: &str,
    version: &str,
    health_of: impl Fn(&str) -> Health,
) -> TableDoc {
    let service = &setup.service;
    let target = |member: &str| {
        let runs = setup.service_in(member);
        TargetDoc {
            cluster: member.to_string(),
            service: runs.qualified(),
            envoy_cluster: runs.envoy_cluster(member),
            weight: setup.weight_of(member),
            health: health_of(member),
        }
    };
    let groups = std::iter::once(vec![target(&setup.primary)])
        .chain(
            setup
                .failover_groups
                .iter()
                .map(|group| group.iter().map(|member| target(member)).collect()),
        )
        .collect();
    TableDoc {
        api_version: TABLE_API_VERSION.to_string(),
        cluster: cluster.to_string(),
        version: version.to_string(),
        schemes: vec![SchemeDoc {
            name: service.qualified(),
            envoy_clusters: vec![service.envoy_cluster(&setup.primary)],
            groups,
            replay: ReplayDoc {
                methods: setup.replay.methods.clone(),
                max_body_bytes: setup.replay.max_body_bytes,
            },
            failback: FailbackDoc {
                stable_for_ms: u64::try_from(setup.stable_for.as_millis()).unwrap_or(u64::MAX),
            },
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_up_table_is_one_the_filter_accepts() {
        let setup = Setup::for_tests();
        let doc = table_for(&setup, "east", "7", |c| {
            if c == "east" {
                Health::Unhealthy
            } else {
                Health::Healthy
            }
        });
        assert_eq!(
            target_health(&doc, "apps/foo"),
            [
                ("east".to_string(), Health::Unhealthy),
                ("west".to_string(), Health::Healthy),
                ("south".to_string(), Health::Healthy)
            ]
        );
        let bytes = serde_json::to_vec(&doc).unwrap();
        let table = detour_filter::table::Table::parse(&bytes, "east", 1 << 20).unwrap();
        let scheme = table.scheme_for("detour|east|apps|foo").unwrap();
        assert_eq!(scheme.primary().unwrap().cluster, "east");
    }
}
