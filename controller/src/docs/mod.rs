//! The documents operators write: `MemberCluster` and `FailoverScheme`
//! (`detour.dev/v1alpha1`), exactly as DESIGN.md shows them.
//!
//! The spec types are the single definition for both sources: files deserialise them
//! (strictly, see [`load`]) and the Kubernetes source gets them as CRDs through the
//! `CustomResource` derive. Durations stay strings here (`"500ms"`) so that the CRD schema
//! shows what users write; [`crate::validate`] parses them with the filter's parser.

pub mod load;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// API group of every detour document.
pub const GROUP: &str = "detour.dev";
/// The one `apiVersion` this build reads.
pub const API_VERSION: &str = "detour.dev/v1alpha1";
/// Port of an east-west gateway when the document does not say.
pub const DEFAULT_GATEWAY_PORT: u16 = 15443;

/// A member cluster: where its east-west gateway is and, in file mode, its services.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "detour.dev",
    version = "v1alpha1",
    kind = "MemberCluster",
    plural = "memberclusters",
    shortname = "mc"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberClusterSpec {
    /// The cluster's east-west gateway, as the other clusters reach it.
    pub gateway: GatewaySpec,
    /// The cluster's services (file mode; in Kubernetes they are discovered).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// IP address or DNS name.
    pub address: String,
    #[serde(default = "default_gateway_port")]
    pub port: u16,
}

fn default_gateway_port() -> u16 {
    DEFAULT_GATEWAY_PORT
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub namespace: String,
    /// The service's port (Istio names the primary's cluster after it).
    pub port: u16,
    /// `HOST:PORT` of each instance (file mode).
    #[serde(default)]
    pub endpoints: Vec<String>,
}

/// A primary service in one cluster and, in priority order, where its requests go when
/// it fails.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "detour.dev",
    version = "v1alpha1",
    kind = "FailoverScheme",
    plural = "failoverschemes",
    shortname = "fs",
    namespaced,
    status = "FailoverSchemeStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverSchemeSpec {
    pub primary: PrimarySpec,
    /// Order is priority: the first group with a Healthy target takes the traffic.
    pub failover_groups: Vec<FailoverGroupSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback: Option<FailbackSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplaySpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrimarySpec {
    pub cluster: String,
    pub name: String,
    pub namespace: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverGroupSpec {
    /// Targets sharing one priority, by weight.
    pub priority_group: Vec<GroupTargetSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupTargetSpec {
    pub cluster: String,
    pub services: Vec<ServiceRefSpec>,
    /// Share of the group's traffic (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRefSpec {
    pub name: String,
    pub namespace: String,
}

/// Active health checks of every target, through its cluster's east-west gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// HTTP path (default `/healthz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Between checks (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Of one check (default `500ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Consecutive failures that make a target Unhealthy (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
    /// Consecutive successes that make an Unhealthy target Healthy again (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailbackSpec {
    /// How long a recovered target must stay Healthy before traffic returns (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_for: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplaySpec {
    /// Methods replayed when a failed attempt may have reached the service
    /// (default GET, HEAD, OPTIONS, PUT, DELETE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Largest request body kept for a replay (default 65536).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
}

/// What the controller decided about a scheme (Kubernetes status; `detour explain`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSchemeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<SchemeState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// 0 = the primary, n = the nth failover group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_group: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetStatus>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SchemeState {
    Accepted,
    Invalid,
    Failed,
    Pending,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    pub cluster: String,
    pub name: String,
    pub namespace: String,
    pub health: TargetHealth,
    /// RFC 3339 time of the last health transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// The filter's `Health`, with a schema for the CRD.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TargetHealth {
    Healthy,
    Unhealthy,
    Unknown,
}

impl From<detour_filter::health::Health> for TargetHealth {
    fn from(h: detour_filter::health::Health) -> Self {
        use detour_filter::health::Health;
        match h {
            Health::Healthy => TargetHealth::Healthy,
            Health::Unhealthy => TargetHealth::Unhealthy,
            Health::Unknown => TargetHealth::Unknown,
        }
    }
}

/// The two kinds of document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    MemberCluster,
    FailoverScheme,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MemberCluster => "MemberCluster",
            Kind::FailoverScheme => "FailoverScheme",
        }
    }

    pub fn parse(kind: &str) -> Option<Kind> {
        match kind {
            "MemberCluster" => Some(Kind::MemberCluster),
            "FailoverScheme" => Some(Kind::FailoverScheme),
            _ => None,
        }
    }

    /// Whether documents of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        matches!(self, Kind::FailoverScheme)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a document came from, for messages: a file and the document's 1-based position
/// in it, or another source (`kubernetes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub source: String,
    pub document: Option<usize>,
}

impl Origin {
    pub fn file(path: impl fmt::Display, document: usize) -> Origin {
        Origin {
            source: path.to_string(),
            document: Some(document),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if let Some(n) = self.document {
            write!(f, ": document {n}")?;
        }
        Ok(())
    }
}

/// A parsed document, whatever its source.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub origin: Origin,
    pub object: Object,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    MemberCluster {
        name: String,
        spec: MemberClusterSpec,
    },
    FailoverScheme {
        namespace: String,
        name: String,
        spec: Box<FailoverSchemeSpec>,
    },
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::MemberCluster { .. } => Kind::MemberCluster,
            Object::FailoverScheme { .. } => Kind::FailoverScheme,
        }
    }

    pub fn namespace(&self) -> Option<&str> {
        match self {
            Object::MemberCluster { .. } => None,
            Object::FailoverScheme { namespace, .. } => Some(namespace),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Object::MemberCluster { name, .. } | Object::FailoverScheme { name, .. } => name,
        }
    }
}

impl Document {
    /// `FailoverScheme apps/foo` or `MemberCluster west`, for messages.
    pub fn subject(&self) -> String {
        subject(
            self.object.kind(),
            self.object.namespace(),
            self.object.name(),
        )
    }
}

pub(crate) fn subject(kind: Kind, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// One thing wrong with the configuration, located as precisely as we can:
/// `config/foo.yaml: document 2 (FailoverScheme apps/foo): spec.primary.cluster: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub origin: Origin,
    /// `Kind namespace/name` when known.
    pub subject: Option<String>,
    /// Field path inside the document, when the problem is in one field.
    pub path: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(s) = &self.subject {
            write!(f, " ({s})")?;
        }
        if let Some(p) = &self.path {
            write!(f, ": {p}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_problems(.0))]
pub struct Problems(pub Vec<Problem>);

fn render_problems(problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&p.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn the_crds_carry_group_version_and_status() {
        let crd = serde_json::to_value(FailoverScheme::crd()).unwrap();
        assert_eq!(crd["spec"]["group"], GROUP);
        assert_eq!(crd["spec"]["names"]["kind"], "FailoverScheme");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(version["subresources"]["status"].is_object());
        let mc = serde_json::to_value(MemberCluster::crd()).unwrap();
        assert_eq!(mc["spec"]["scope"], "Cluster");
        assert_eq!(format!("{GROUP}/v1alpha1"), API_VERSION);
    }

    #[test]
    fn problems_read_as_one_line_each() {
        let p = Problem {
            origin: Origin::file("config/foo.yaml", 2),
            subject: Some("FailoverScheme apps/foo".into()),
            path: Some("spec.primary.cluster".into()),
            message: "unknown cluster \"nowhere\"".into(),
        };
        assert_eq!(
            p.to_string(),
            "config/foo.yaml: document 2 (FailoverScheme apps/foo): spec.primary.cluster: unknown cluster \"nowhere\""
        );
        let both = Problems(vec![p.clone(), p]).to_string();
        assert_eq!(both.lines().count(), 2);
    }
}
