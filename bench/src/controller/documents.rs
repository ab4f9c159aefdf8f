//! Made-up federations of any size, as `MemberCluster` and `FailoverScheme` documents.
//!
//! `clusters` member clusters `c00`, `c01`, …, each running `services` services
//! `bench/s000`, …; one scheme per service and cluster, whose primary is that service in
//! that cluster and whose two failover groups are the same service in the next two
//! clusters (in a ring). So there are `clusters × services` schemes and as many distinct
//! targets, each the primary of one scheme and a failover target of two others, and
//! every cluster's table holds `services` schemes.

use std::fmt::Write as _;
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy)]
pub struct Federation {
    pub clusters: usize,
    pub services: usize,
}

impl Federation {
    pub fn cluster(k: usize) -> String {
        format!("c{k:02}")
    }

    /// Every document, as one YAML file. `gateway(k)` is cluster k's east-west gateway.
    pub fn documents(&self, gateway: impl Fn(usize) -> SocketAddr) -> String {
        let mut out = String::new();
        for k in 0..self.clusters {
            let gw = gateway(k);
            let _ = write!(
                out,
                "apiVersion: detour.dev/v1alpha1\nkind: MemberCluster\nmetadata: {{name: {}}}\n\
                 spec:\n  gateway: {{address: {}, port: {}}}\n  services:\n",
                Self::cluster(k),
                gw.ip(),
                gw.port()
            );
            for i in 0..self.services {
                let _ = writeln!(
                    out,
                    "  - {{name: s{i:03}, namespace: bench, port: 8080, endpoints: [\"127.0.0.1:9\"]}}"
                );
            }
            out.push_str("---\n");
        }
        for k in 0..self.clusters {
            for i in 0..self.services {
                let group = |step: usize| {
                    format!(
                        "  - priorityGroup:\n    - {{cluster: {}, services: [{{name: s{i:03}, namespace: bench}}]}}\n",
                        Self::cluster((k + step) % self.clusters)
                    )
                };
                let groups: String = (1..self.clusters.min(3)).map(group).collect();
                let _ = write!(
                    out,
                    "apiVersion: detour.dev/v1alpha1\nkind: FailoverScheme\n\
                     metadata: {{name: s{i:03}-{c}, namespace: bench}}\nspec:\n  \
                     primary: {{cluster: {c}, name: s{i:03}, namespace: bench}}\n  \
                     failoverGroups:\n{groups}  \
                     healthCheck: {{path: /healthz, interval: 1s, timeout: 500ms, \
                     unhealthyThreshold: 2, healthyThreshold: 2}}\n  \
                     failback: {{stableFor: 1s}}\n---\n",
                    c = Self::cluster(k)
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documents_validate_as_a_federation_of_that_size() {
        let f = Federation {
            clusters: 3,
            services: 2,
        };
        let text = f.documents(|k| format!("127.0.10.{}:15443", k + 1).parse().unwrap());
        let (docs, problems) = detour_core::docs::load::parse_file("bench.yaml", &text);
        assert!(problems.is_empty(), "{problems:?}");
        let model = detour_core::validate::build_model(&docs).unwrap();
        assert_eq!(model.clusters.len(), 3);
        assert_eq!(model.schemes.len(), 6);
        // Each scheme's three targets (one per cluster), checked as its primary's
        // cluster calls them: 6 schemes × 3.
        assert_eq!(
            model.probe_specs().len(),
            18,
            "one check per target and calling cluster"
        );
        assert_eq!(model.schemes_of("c00").count(), 2);
    }
}
