//! The documents operators write: `MemberCluster` and `FailoverScheme`
//! (`detour.dev/v1alpha1`), exactly as DESIGN.md shows them.
//!
//! The spec types are the single definition for both sources: files deserialise them
//! (strictly, see [`load`]) and the Kubernetes source gets them as CRDs through the
//! `CustomResource` derive. Durations stay strings here (`"500ms"`) so that the CRD schema
//! shows what users write; [`crate::validate`] parses them with the filter's parser.
//!
//! The `schemars` attributes put into the CRD schema what the API server can check on
//! its own (required fields, minimums, name and duration patterns, enums), so that
//! `kubectl apply` refuses those mistakes before detour sees them. [`crate::validate`]
//! still checks everything (files have no API server), and adds what a schema cannot say:
//! references between documents, duplicates, a timeout longer than its interval.

pub mod load;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// API group of every detour document.
pub const GROUP: &str = "detour.dev";
/// The one `apiVersion` this build reads.
pub const API_VERSION: &str = "detour.dev/v1alpha1";
/// Port of an east-west gateway when the document does not say.
pub const DEFAULT_GATEWAY_PORT: u16 = 15443;

/// Key of the kubeconfig in a member cluster's Secret when the reference does not say.
pub const DEFAULT_KUBECONFIG_KEY: &str = "kubeconfig";

/// A Kubernetes name: an RFC 1123 label (namespaces, services).
const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A Kubernetes name: an RFC 1123 subdomain (member clusters).
const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// What `detour_filter::duration::parse_duration` reads: `500ms`, `1.5s`, `1m30s`.
pub const DURATION_PATTERN: &str = r"^(([0-9]+\.?[0-9]*|\.[0-9]+)(ms|s|m|h))+$";

/// A member cluster: where its east-west gateway is and, in file mode, its services.
///
/// Cluster-scoped: a member cluster belongs to the whole federation, and schemes in every
/// namespace name it (files refuse a namespace on it for the same reason).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "detour.dev",
    version = "v1alpha1",
    kind = "MemberCluster",
    plural = "memberclusters",
    shortname = "mc",
    category = "detour",
    doc = "A member cluster of the federation: its east-west gateway and, in Kubernetes, how detour reaches its API.",
    status = "MemberClusterStatus",
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Gateway","type":"string","jsonPath":".spec.gateway.address"}"#,
    printcolumn = r#"{"name":"Services","type":"integer","jsonPath":".status.services"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message","priority":1}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberClusterSpec {
    /// The cluster's east-west gateway, as the other clusters reach it.
    pub gateway: GatewaySpec,
    /// The cluster's services (file mode only: in Kubernetes they are discovered from the
    /// cluster's Services and EndpointSlices, and listing them is refused).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceSpec>,
    /// Kubernetes mode: the Secret, in the controller's namespace, holding a kubeconfig
    /// for this cluster (`detour cluster register` prints one). Absent: this cluster is
    /// the one the controller runs in (in-cluster config). Ignored in file mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret: Option<KubeconfigSecretRef>,
}

/// A Secret in the controller's own namespace. Only that namespace: a MemberCluster is
/// cluster-scoped, and letting it name any namespace would let whoever may write one make
/// detour read Secrets its author cannot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeconfigSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,
    /// Key of the kubeconfig in the Secret's data (default `kubeconfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub key: Option<String>,
}

impl KubeconfigSecretRef {
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or(DEFAULT_KUBECONFIG_KEY)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// The API server refuses a gateway with both forms or neither, as `detour check` does.
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.address) != has(self.addresses)",
    "message": "give gateway.address or gateway.addresses (several instances), not both"
}]))]
pub struct GatewaySpec {
    /// IP address or DNS name of the gateway (or use `addresses` for several instances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub address: Option<String>,
    /// IP addresses or DNS names of the gateway's instances, all on `port`: a failed
    /// attempt through one goes to another, and the cluster is unreachable only when
    /// none answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(length(min = 1, max = 253)))]
    pub addresses: Vec<String>,
    /// Port of the gateway's mTLS listener (default 15443).
    #[serde(default = "default_gateway_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
}

fn default_gateway_port() -> u16 {
    DEFAULT_GATEWAY_PORT
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    #[schemars(length(max = 63), regex(pattern = DNS_LABEL))]
    pub name: String,
    #[schemars(length(max = 63), regex(pattern = DNS_LABEL))]
    pub namespace: String,
    /// The service's port (Istio names the primary's cluster after it).
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// `HOST:PORT` of each instance (file mode).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// What the pods speak: `http` (HTTP/1.1, the default), `http2` (h2c) or `grpc`
    /// (h2c). In Kubernetes: from the Service port's `appProtocol`, else its name.
    // A string, read by validation like durations: a misspelt value is then one problem
    // at this field, not a MemberCluster that fails to parse (whose schemes would all
    // also report it unknown). The schema still lists the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "ServiceProtocol")]
    pub protocol: Option<String>,
}

/// The values of a service's `protocol`, for the CRD schema
/// ([`crate::model::Protocol::parse`] reads them).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceProtocol {
    Http,
    Http2,
    Grpc,
}

/// A primary service in one cluster and, in priority order, where its requests go when
/// it fails.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    crates(kube_core = "::kube_core"),
    group = "detour.dev",
    version = "v1alpha1",
    kind = "FailoverScheme",
    plural = "failoverschemes",
    shortname = "fs",
    category = "detour",
    doc = "A primary service in one member cluster and, in priority order, the services in other clusters to fail over to (the same service, or another one).",
    namespaced,
    status = "FailoverSchemeStatus",
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Active","type":"integer","jsonPath":".status.activeGroup","description":"0 = the primary, n = the nth failover group"}"#,
    printcolumn = r#"{"name":"Primary","type":"string","jsonPath":".spec.primary.cluster"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message","priority":1}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverSchemeSpec {
    pub primary: PrimarySpec,
    /// Order is priority: the first group with a Healthy target takes the traffic.
    #[schemars(length(min = 1))]
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
    /// The MemberCluster the primary runs in.
    #[schemars(length(max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub cluster: String,
    #[schemars(length(max = 63), regex(pattern = DNS_LABEL))]
    pub name: String,
    #[schemars(length(max = 63), regex(pattern = DNS_LABEL))]
    pub namespace: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverGroupSpec {
    /// Targets sharing one priority, by weight.
    #[schemars(length(min = 1))]
    pub priority_group: Vec<GroupTargetSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupTargetSpec {
    #[schemars(length(max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub cluster: String,
    #[schemars(length(min = 1))]
    pub services: Vec<ServiceRefSpec>,
    /// Share of the group's traffic (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub weight: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRefSpec {
    #[schemars(length(max = 63), regex(pattern = DNS_LABEL))]
    pub name: String,
    #[schemars(length(max = 63), regex(pattern = DNS_LABEL))]
    pub namespace: String,
}

/// Active health checks of every target, through its cluster's east-west gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// HTTP path checked with a GET (default `/healthz`). Not with `grpc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/[!-~]*$"))]
    pub path: Option<String>,
    /// Check with the gRPC health checking protocol (`grpc.health.v1.Health/Check`,
    /// SERVING passes) instead of an HTTP GET of `path`. Not with `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheckSpec>,
    /// Between checks (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: Option<String>,
    /// Of one check (default `500ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: Option<String>,
    /// Consecutive failures that make a target Unhealthy (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub unhealthy_threshold: Option<u32>,
    /// Consecutive successes that make an Unhealthy target Healthy again (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub healthy_threshold: Option<u32>,
}

/// `healthCheck.grpc`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcHealthCheckSpec {
    /// The `service` of the HealthCheckRequest (default `""`: the server as a whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailbackSpec {
    /// How long a recovered target must stay Healthy before traffic returns (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub stable_for: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplaySpec {
    /// Methods replayed when a failed attempt may have reached the service
    /// (default GET, HEAD, OPTIONS, PUT, DELETE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(regex(pattern = r"^[A-Za-z-]+$")))]
    pub methods: Option<Vec<String>>,
    /// Largest request body Envoy keeps for a retry (default 65536); a larger request is
    /// sent once and never retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// An attempt of one of `methods` that hangs this long goes on to the next instance
    /// or group (absent: no per-try timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub per_try_timeout: Option<String>,
}

/// What the controller decided about a scheme (Kubernetes status; `detour explain`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSchemeStatus {
    // The schema of the enum itself: an optional enum would list `null` among its
    // values, which a structural schema does not need (an absent field is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "SchemeState")]
    pub state: Option<SchemeState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `metadata.generation` this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// 0 = the primary, n = the nth failover group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_group: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetStatus>,
}

/// What the controller decided about a member cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberClusterStatus {
    // The schema of the enum itself: an optional enum would list `null` among its
    // values, which a structural schema does not need (an absent field is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "SchemeState")]
    pub state: Option<SchemeState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `metadata.generation` this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Services discovered in the cluster that some FailoverScheme names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<u32>,
    /// Set while the cluster's table is past 80% of the filters' `maxTableBytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TableLimitStatus>,
}

/// A member cluster's table near or over the filters' `maxTableBytes` (the controller's
/// `--max-table-bytes`), which every filter refuses past.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TableLimitStatus {
    /// The newest table's size as a percentage of `maxTableBytes` (whole percent, so
    /// the status changes with the table's growth, not with every byte).
    pub percent_of_limit: u32,
    /// False over the limit: the newest table is not served, the cluster's last good
    /// table is.
    pub served: bool,
    pub message: String,
}

/// Accepted: served as written. Invalid: refused (the message says which field and
/// why). Pending: waiting for something that normally comes (a member cluster's first
/// listing). Failed: valid, but detour cannot act on it (a member cluster it cannot
/// reach).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SchemeState {
    Accepted,
    Invalid,
    Failed,
    Pending,
}

impl SchemeState {
    pub fn as_str(self) -> &'static str {
        match self {
            SchemeState::Accepted => "Accepted",
            SchemeState::Invalid => "Invalid",
            SchemeState::Failed => "Failed",
            SchemeState::Pending => "Pending",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    pub cluster: String,
    pub name: String,
    pub namespace: String,
    /// The health the tables use (probes, failback damping, and in Kubernetes a service
    /// without ready endpoints).
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
    /// The object this document defines.
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            kind: self.object.kind(),
            namespace: self.object.namespace().map(str::to_string),
            name: self.object.name().to_string(),
        }
    }
}

/// Which object a problem or a status is about; reads `FailoverScheme apps/foo` or
/// `MemberCluster west`, as in messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    /// The object a Kubernetes resource of `kind` with this metadata is.
    pub fn of(kind: Kind, meta: &ObjectMeta) -> ObjectRef {
        ObjectRef {
            kind,
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// What kind of problem a [`Problem`] is: what a caller decides on (Kubernetes status
/// tells a wait from a mistake by it), never by reading the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// A file or directory could not be read.
    Unreadable,
    /// Not a document: bad YAML, a wrong type, an unknown or missing field.
    Malformed,
    /// A well-formed document that contradicts itself or another one.
    Invalid,
    /// A scheme names a service its member cluster does not have (yet, in Kubernetes,
    /// when that cluster's Services are not listed yet).
    UnknownService,
}

/// One thing wrong with the configuration, located as precisely as we can:
/// `config/foo.yaml: document 2 (FailoverScheme apps/foo): spec.primary.cluster: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub origin: Origin,
    /// The object it is about, when known.
    pub object: Option<ObjectRef>,
    /// Field path inside the document, when the problem is in one field.
    pub path: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(o) = &self.object {
            write!(f, " ({o})")?;
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
    use kube_core::CustomResourceExt;

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
            kind: ProblemKind::Invalid,
            origin: Origin::file("config/foo.yaml", 2),
            object: Some(ObjectRef {
                kind: Kind::FailoverScheme,
                namespace: Some("apps".into()),
                name: "foo".into(),
            }),
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
