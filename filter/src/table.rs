//! The priority table: the controller's answer to "where may each of my services go".
//!
//! [`wire`] is the JSON shape on `GET /v1/tables/{cluster}` — the controller serialises it,
//! the filter deserialises it, from the same types. [`Table`] is the compiled form a filter
//! worker keeps per table version: lookups by the route's Envoy cluster name are one hash
//! probe, and nothing on the request path parses or copies it.

use crate::health::Health;
use std::collections::HashMap;
use std::fmt;

/// The table format this build reads. A table of any other version is refused (and the
/// last good one kept), so an old filter never misreads a newer controller.
pub const TABLE_API_VERSION: &str = "detour.dev/table/v1";

/// The most priority groups a scheme may have, the primary's included: the filter names
/// the start group in the route header, and the rendered routes cover this many.
pub const MAX_GROUPS: usize = 16;

/// Refuse tables larger than this unless the filter configuration says otherwise.
pub const DEFAULT_MAX_TABLE_BYTES: usize = 4 * 1024 * 1024;

pub mod wire {
    //! The JSON table, field for field.
    use crate::health::Health;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct TableDoc {
        pub api_version: String,
        /// The member cluster this table is for.
        pub cluster: String,
        /// Changes whenever anything in this table changes; the HTTP ETag.
        pub version: String,
        pub schemes: Vec<SchemeDoc>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct SchemeDoc {
        /// `namespace/name` of the FailoverScheme.
        pub name: String,
        /// Envoy cluster names under which the primary service is routed in this member
        /// cluster (`detour|east|apps|foo` as rendered, Istio's `outbound|...` names too).
        pub envoy_clusters: Vec<String>,
        /// Group 0 is the primary alone; group n is the nth failover priority group.
        pub groups: Vec<Vec<TargetDoc>>,
        pub replay: ReplayDoc,
        pub failback: FailbackDoc,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct TargetDoc {
        /// Member cluster the target runs in.
        pub cluster: String,
        /// `namespace/name` of the service.
        pub service: String,
        /// Envoy cluster to route to (the local service, or a remote east-west gateway).
        pub envoy_cluster: String,
        pub weight: u32,
        pub health: Health,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct ReplayDoc {
        pub methods: Vec<String>,
        pub max_body_bytes: u64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct FailbackDoc {
        pub stable_for_ms: u64,
    }
}

/// Why a fetched table was refused (the filter then keeps its last good table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableError {
    TooLarge { bytes: usize, limit: usize },
    Malformed(String),
    UnknownVersion(String),
    WrongCluster { expected: String, got: String },
    Invalid(String),
}

impl TableError {
    /// Short stable label for stats and logs.
    pub fn label(&self) -> &'static str {
        match self {
            TableError::TooLarge { .. } => "too_large",
            TableError::Malformed(_) => "malformed",
            TableError::UnknownVersion(_) => "unknown_version",
            TableError::WrongCluster { .. } => "wrong_cluster",
            TableError::Invalid(_) => "invalid",
        }
    }
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::TooLarge { bytes, limit } => {
                write!(f, "table is {bytes} bytes, over the {limit}-byte limit")
            }
            TableError::Malformed(why) => write!(f, "table is not valid JSON: {why}"),
            TableError::UnknownVersion(v) => write!(
                f,
                "table apiVersion {v:?} is not {TABLE_API_VERSION:?} (newer controller?)"
            ),
            TableError::WrongCluster { expected, got } => {
                write!(
                    f,
                    "table is for cluster {got:?}, this Envoy is in {expected:?}"
                )
            }
            TableError::Invalid(why) => write!(f, "table is inconsistent: {why}"),
        }
    }
}

impl std::error::Error for TableError {}

/// One target as a worker holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub cluster: String,
    pub service: String,
    pub envoy_cluster: String,
    pub weight: u32,
    pub health: Health,
}

/// Which methods may be replayed when the failed attempt may have reached the upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayPolicy {
    /// Upper-case method names.
    pub methods: Vec<String>,
    pub max_body_bytes: u64,
}

impl ReplayPolicy {
    pub fn allows_method(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
    }
}

/// One failover scheme, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheme {
    pub name: String,
    /// `groups[0]` holds the primary; later groups in priority order. Never empty.
    pub groups: Vec<Vec<Target>>,
    pub replay: ReplayPolicy,
    pub failback_stable_for_ms: u64,
}

impl Scheme {
    /// The primary target (first target of group 0).
    pub fn primary(&self) -> Option<&Target> {
        self.groups.first().and_then(|g| g.first())
    }

    /// Every target in priority order with its group index.
    pub fn targets(&self) -> impl Iterator<Item = (usize, &Target)> {
        self.groups
            .iter()
            .enumerate()
            .flat_map(|(i, g)| g.iter().map(move |t| (i, t)))
    }
}

/// A compiled table: immutable once built; workers share it behind an `Rc`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub cluster: String,
    pub version: String,
    pub schemes: Vec<Scheme>,
    by_envoy_cluster: HashMap<String, usize>,
}

impl Table {
    /// Parses and checks a table fetched for `expected_cluster`.
    pub fn parse(bytes: &[u8], expected_cluster: &str, limit: usize) -> Result<Table, TableError> {
        if bytes.len() > limit {
            return Err(TableError::TooLarge {
                bytes: bytes.len(),
                limit,
            });
        }
        // Check the version before the full shape so that a future format (with fields
        // this build does not know) is reported as such, not as "malformed".
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Head {
            api_version: String,
        }
        let head: Head =
            serde_json::from_slice(bytes).map_err(|e| TableError::Malformed(e.to_string()))?;
        if head.api_version != TABLE_API_VERSION {
            return Err(TableError::UnknownVersion(head.api_version));
        }
        let doc: wire::TableDoc =
            serde_json::from_slice(bytes).map_err(|e| TableError::Malformed(e.to_string()))?;
        if doc.cluster != expected_cluster {
            return Err(TableError::WrongCluster {
                expected: expected_cluster.to_string(),
                got: doc.cluster,
            });
        }
        Table::compile(doc)
    }

    /// Builds the lookup form from the wire form, refusing tables a worker could not use.
    pub fn compile(doc: wire::TableDoc) -> Result<Table, TableError> {
        let mut by_envoy_cluster = HashMap::new();
        let mut schemes = Vec::with_capacity(doc.schemes.len());
        for (index, s) in doc.schemes.into_iter().enumerate() {
            if s.groups.first().is_none_or(|g| g.is_empty()) {
                return Err(TableError::Invalid(format!(
                    "scheme {:?} has no primary target",
                    s.name
                )));
            }
            if s.groups.len() > MAX_GROUPS {
                return Err(TableError::Invalid(format!(
                    "scheme {:?} has {} priority groups; a route can start at {MAX_GROUPS} at most",
                    s.name,
                    s.groups.len()
                )));
            }
            for envoy_cluster in &s.envoy_clusters {
                if by_envoy_cluster
                    .insert(envoy_cluster.clone(), index)
                    .is_some()
                {
                    return Err(TableError::Invalid(format!(
                        "Envoy cluster {envoy_cluster:?} is the primary of two schemes"
                    )));
                }
            }
            let groups = s
                .groups
                .into_iter()
                .map(|g| {
                    g.into_iter()
                        .map(|t| Target {
                            cluster: t.cluster,
                            service: t.service,
                            envoy_cluster: t.envoy_cluster,
                            weight: t.weight,
                            health: t.health,
                        })
                        .collect()
                })
                .collect();
            schemes.push(Scheme {
                name: s.name,
                groups,
                replay: ReplayPolicy {
                    methods: s
                        .replay
                        .methods
                        .iter()
                        .map(|m| m.to_ascii_uppercase())
                        .collect(),
                    max_body_bytes: s.replay.max_body_bytes,
                },
                failback_stable_for_ms: s.failback.stable_for_ms,
            });
        }
        Ok(Table {
            cluster: doc.cluster,
            version: doc.version,
            schemes,
            by_envoy_cluster,
        })
    }

    /// The scheme whose primary is routed as `envoy_cluster` here, if any.
    pub fn scheme_for(&self, envoy_cluster: &str) -> Option<&Scheme> {
        self.scheme_index(envoy_cluster)
            .and_then(|i| self.schemes.get(i))
    }

    /// The index in [`Table::schemes`] of the scheme [`Table::scheme_for`] finds, so a
    /// request can hold on to it across callbacks without borrowing the table.
    pub fn scheme_index(&self, envoy_cluster: &str) -> Option<usize> {
        self.by_envoy_cluster.get(envoy_cluster).copied()
    }

    /// The scheme named `namespace/name`.
    pub fn scheme_named(&self, name: &str) -> Option<&Scheme> {
        self.schemes.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Small builders so tests state only what matters to them.
    use super::wire::*;
    use crate::health::Health;

    pub fn target(cluster: &str, health: Health) -> TargetDoc {
        TargetDoc {
            cluster: cluster.to_string(),
            service: "apps/foo".to_string(),
            envoy_cluster: format!("detour|{cluster}|apps|foo"),
            weight: 1,
            health,
        }
    }

    pub fn weighted(cluster: &str, weight: u32, health: Health) -> TargetDoc {
        TargetDoc {
            weight,
            ..target(cluster, health)
        }
    }

    pub fn scheme(groups: Vec<Vec<TargetDoc>>) -> SchemeDoc {
        let primary = groups[0][0].envoy_cluster.clone();
        SchemeDoc {
            name: "apps/foo".to_string(),
            envoy_clusters: vec![primary],
            groups,
            replay: ReplayDoc {
                methods: vec!["GET".into(), "HEAD".into()],
                max_body_bytes: 65536,
            },
            failback: FailbackDoc {
                stable_for_ms: 10_000,
            },
        }
    }

    pub fn table(schemes: Vec<SchemeDoc>) -> TableDoc {
        TableDoc {
            api_version: super::TABLE_API_VERSION.to_string(),
            cluster: "east".to_string(),
            version: "1".to_string(),
            schemes,
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::fixtures::*;
    use super::*;

    fn json(doc: &wire::TableDoc) -> Vec<u8> {
        serde_json::to_vec(doc).unwrap()
    }

    #[test]
    fn finds_the_scheme_by_the_routes_envoy_cluster() {
        let doc = table(vec![scheme(vec![
            vec![target("east", Health::Healthy)],
            vec![target("west", Health::Healthy)],
        ])]);
        let t = Table::parse(&json(&doc), "east", DEFAULT_MAX_TABLE_BYTES).unwrap();
        let s = t.scheme_for("detour|east|apps|foo").unwrap();
        assert_eq!(s.name, "apps/foo");
        assert_eq!(s.primary().unwrap().cluster, "east");
        assert!(t.scheme_for("detour|east|apps|bar").is_none());
    }

    #[test]
    fn refuses_tables_it_must_not_use() {
        let good = table(vec![scheme(vec![vec![target("east", Health::Healthy)]])]);
        let bytes = json(&good);
        assert_eq!(
            Table::parse(&bytes, "east", 10).unwrap_err().label(),
            "too_large"
        );
        assert_eq!(
            Table::parse(b"{not json", "east", 1 << 20)
                .unwrap_err()
                .label(),
            "malformed"
        );
        assert_eq!(
            Table::parse(&bytes, "west", 1 << 20).unwrap_err().label(),
            "wrong_cluster"
        );
        let mut future = good.clone();
        future.api_version = "detour.dev/table/v9".into();
        assert_eq!(
            Table::parse(&json(&future), "east", 1 << 20)
                .unwrap_err()
                .label(),
            "unknown_version"
        );
        let mut empty = good.clone();
        empty.schemes[0].groups = vec![vec![]];
        assert_eq!(
            Table::parse(&json(&empty), "east", 1 << 20)
                .unwrap_err()
                .label(),
            "invalid"
        );
        let mut twice = good;
        twice.schemes.push(twice.schemes[0].clone());
        assert_eq!(
            Table::parse(&json(&twice), "east", 1 << 20)
                .unwrap_err()
                .label(),
            "invalid"
        );
    }

    #[test]
    fn methods_compare_without_case() {
        let doc = table(vec![scheme(vec![vec![target("east", Health::Healthy)]])]);
        let t = Table::compile(doc).unwrap();
        let replay = &t.schemes[0].replay;
        assert!(replay.allows_method("get"));
        assert!(!replay.allows_method("POST"));
    }
}
