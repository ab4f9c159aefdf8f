//! The validated configuration: what the documents mean once every reference resolves.
//! Built by [`crate::validate`]; read by the health checker, the table builder, the Envoy
//! renderer and `explain`. No I/O, no Kubernetes types.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// Envoy cluster through which every Envoy reaches the controller (internals.md).
pub const CONTROLLER_CLUSTER: &str = "detour_controller";

/// A host: an IP address or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    pub host: Host,
    pub port: u16,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            host => write!(f, "{host}:{}", self.port),
        }
    }
}

impl Address {
    /// Parses `HOST:PORT` (`[v6]:PORT` for IPv6). The message says what is wrong.
    pub fn parse(text: &str) -> Result<Address, String> {
        if let Ok(sa) = text.parse::<std::net::SocketAddr>() {
            return Address::new(Host::Ip(sa.ip()), sa.port());
        }
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} is not HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{text:?}: the port must be a number from 1 to 65535"))?;
        Address::new(
            parse_host(host).map_err(|e| format!("{text:?}: {e}"))?,
            port,
        )
    }

    pub fn new(host: Host, port: u16) -> Result<Address, String> {
        if port == 0 {
            return Err("port 0 is not a port one can connect to".into());
        }
        Ok(Address { host, port })
    }

    pub fn is_ip(&self) -> bool {
        matches!(self.host, Host::Ip(_))
    }
}

/// Parses a host: an IP address or an RFC 1123 DNS name.
pub fn parse_host(text: &str) -> Result<Host, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let labels_ok = !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    // A last label of digits only would make a mistyped IP address (`10.0.0.1.5`) a name.
    let numeric_tld = text
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if labels_ok && !numeric_tld {
        Ok(Host::Name(text.to_ascii_lowercase()))
    } else {
        Err(format!("{text:?} is neither an IP address nor a DNS name"))
    }
}

/// A service by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

impl ServiceName {
    pub fn new(namespace: &str, name: &str) -> ServiceName {
        ServiceName {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// `NAME.NAMESPACE`: the host name a request for this service carries, and the
    /// `Host` of its health checks.
    pub fn authority(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A service as it runs in one member cluster: one failover target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetRef {
    pub cluster: String,
    pub service: ServiceName,
}

impl TargetRef {
    /// `detour|C|NS|NAME`: this service of cluster C, from any Envoy (internals.md).
    pub fn envoy_cluster(&self) -> String {
        format!(
            "detour|{}|{}|{}",
            self.cluster, self.service.namespace, self.service.name
        )
    }
}

impl fmt::Display for TargetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in cluster {}", self.service, self.cluster)
    }
}

/// Istio's Envoy cluster name for a service: `outbound|PORT||NAME.NS.svc.cluster.local`.
pub fn istio_cluster(service: &ServiceName, port: u16) -> String {
    format!(
        "outbound|{port}||{}.{}.svc.cluster.local",
        service.name, service.namespace
    )
}

/// The namespace Gloo Edge's discovery writes the Upstreams it creates in: the one Gloo is
/// installed in, `gloo-system` unless the install chose another.
pub const GLOO_SYSTEM: &str = "gloo-system";

/// Gloo Edge's Envoy cluster name for the Upstream its discovery creates for a Kubernetes
/// service port: the Upstream is named `NAMESPACE-NAME-PORT` (`kubernetes.UpstreamName`,
/// through `SanitizeNameV2`) in [`GLOO_SYSTEM`], and a cluster is named `NAME_NAMESPACE`
/// of its Upstream (`translator.UpstreamToClusterName`). `None` when Gloo would shorten
/// the name with an MD5 hash (over 63 characters), which detour does not compute. Two
/// services can share one such name (`a-b/c` and `a/b-c`), as they share the Upstream:
/// the table leaves a shared name out ([`crate::decide`]).
pub fn gloo_edge_cluster(service: &ServiceName, port: u16) -> Option<String> {
    gloo_upstream(service, port).map(|upstream| format!("{upstream}_{GLOO_SYSTEM}"))
}

/// `NAMESPACE-NAME-PORT`, Gloo's name of a Kubernetes service port's Upstream; `None`
/// over 63 characters, where Gloo shortens it with an MD5 hash detour does not compute.
fn gloo_upstream(service: &ServiceName, port: u16) -> Option<String> {
    // Kubernetes names are DNS labels (lower-case letters, digits, '-'): sanitising
    // leaves them as they are, but for the length.
    let upstream = format!("{}-{}-{port}", service.namespace, service.name).to_ascii_lowercase();
    (upstream.len() <= 63).then_some(upstream)
}

/// Gloo's Envoy cluster names for a Kubernetes Service as a route's destination (Gloo
/// Gateway's `HTTPRoute` `backendRefs`, or a Gloo Edge route's `kube` destination): an
/// in-memory Upstream `kube-svc:NAMESPACE-NAME-PORT` in the Service's namespace, its
/// cluster named `UPSTREAM_NAMESPACE` as any Upstream's; some Gloo releases spelled the
/// Service out as well (`UPSTREAM_NAMESPACE_NAMESPACE_NAME_PORT`), so both are listed.
/// Unlike [`gloo_edge_cluster`]'s each names one service (the namespace stands apart);
/// none past 63 characters of the Upstream part, for the same hash.
pub fn gloo_service_clusters(service: &ServiceName, port: u16) -> Vec<String> {
    let Some(upstream) = gloo_upstream(service, port) else {
        return Vec::new();
    };
    let (namespace, name) = (&service.namespace, &service.name);
    vec![
        format!("kube-svc:{upstream}_{namespace}"),
        format!("kube-svc:{upstream}_{namespace}_{namespace}_{name}_{port}"),
    ]
}

/// kgateway's Envoy cluster name for a Kubernetes Service port as a route's backend:
/// `kube_NAMESPACE_NAME_PORT` (the `kube` prefix of its kubernetes plugin,
/// `ir.buildClusterName`). `_` is in no Kubernetes name, so it names one service.
pub fn kgateway_cluster(service: &ServiceName, port: u16) -> String {
    format!("kube_{}_{}_{port}", service.namespace, service.name)
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Model {
    /// By name.
    pub clusters: BTreeMap<String, Cluster>,
    /// Sorted by namespace, then name.
    pub schemes: Vec<Scheme>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    /// The gateway's first (or only) instance: the one certificates and status name.
    pub gateway: Address,
    /// Its other instances, in the order the document lists them.
    pub more_gateways: Vec<Address>,
    pub services: BTreeMap<ServiceName, Service>,
}

impl Cluster {
    /// Every instance of the cluster's east-west gateway, the first first.
    pub fn gateways(&self) -> impl Iterator<Item = &Address> {
        std::iter::once(&self.gateway).chain(&self.more_gateways)
    }
}

/// A service as a member cluster has it, whether a scheme names it or not: what the
/// status API lists of every cluster. No endpoints: their churn is not news there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownService {
    pub name: ServiceName,
    pub port: u16,
    pub protocol: Protocol,
}

/// Every service of each member cluster, by cluster name. In Kubernetes the model holds
/// only the discovered services a scheme names (so that the same documents give the same
/// model as in files); this holds them all. In file mode the model lists them all.
pub type Catalogue = BTreeMap<String, Vec<KnownService>>;

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: ServiceName,
    pub port: u16,
    pub endpoints: Vec<Address>,
    /// What its pods speak; the same in every Envoy hop that carries its requests.
    pub protocol: Protocol,
}

/// What a service's pods speak, and so what Envoy speaks to them and, for a remote
/// target, to that cluster's gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Protocol {
    /// HTTP/1.1.
    #[default]
    Http,
    /// HTTP/2 without TLS, with prior knowledge (h2c).
    Http2,
    /// gRPC: h2c, as `Http2`, named apart because checks and users treat it apart.
    Grpc,
}

impl Protocol {
    /// Whether Envoy must speak HTTP/2 to it (an HTTP/1.1 connection cannot carry
    /// gRPC's trailers, and an h2c-only server refuses HTTP/1.1).
    pub fn is_http2(&self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }

    /// Every protocol, in the order documents list them.
    pub const ALL: [Protocol; 3] = [Protocol::Http, Protocol::Http2, Protocol::Grpc];

    /// As documents write it (`http`, `http2`, `grpc`).
    pub fn parse(text: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// As documents write it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scheme {
    pub namespace: String,
    pub name: String,
    pub primary: TargetRef,
    /// Failover priority groups, in order (the primary is not among them).
    pub groups: Vec<Vec<WeightedTarget>>,
    pub health_check: HealthCheck,
    pub failback: Failback,
    pub replay: Replay,
}

impl Scheme {
    /// `namespace/name` of the FailoverScheme (the table's scheme name).
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The primary, then every failover target in priority order.
    pub fn targets(&self) -> impl Iterator<Item = &TargetRef> {
        std::iter::once(&self.primary).chain(self.groups.iter().flatten().map(|t| &t.target))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WeightedTarget {
    pub target: TargetRef,
    pub weight: u32,
}

/// How targets are checked. Two schemes with the same target and the same policy share
/// one checker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HealthCheck {
    /// What one check asks.
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            kind: CheckKind::default(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            unhealthy_threshold: 2,
            healthy_threshold: 2,
        }
    }
}

/// What one health check asks the target, through its cluster's gateway.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CheckKind {
    /// `GET path`; a 2xx answer passes.
    Http { path: String },
    /// `grpc.health.v1.Health/Check` for `service_name` (empty: the server as a whole);
    /// SERVING passes.
    Grpc { service_name: String },
}

/// The path checked when a document names neither `path` nor `grpc`.
pub const DEFAULT_HEALTH_PATH: &str = "/healthz";

impl Default for CheckKind {
    fn default() -> Self {
        CheckKind::Http {
            path: DEFAULT_HEALTH_PATH.into(),
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckKind::Http { path } => write!(f, "GET {path}"),
            CheckKind::Grpc { service_name } => {
                write!(f, "gRPC Health/Check of {service_name:?}")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failback {
    /// A recovered target is reported Healthy only after this long Healthy.
    pub stable_for: Duration,
}

impl Default for Failback {
    fn default() -> Self {
        Failback {
            stable_for: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// Upper-case.
    pub methods: Vec<String>,
    /// Largest request body Envoy buffers for a retry.
    pub max_body_bytes: u64,
    /// An attempt of one of `methods` hanging this long goes on.
    pub per_try_timeout: Option<Duration>,
}

impl Default for Replay {
    fn default() -> Self {
        Replay {
            methods: ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]
                .map(String::from)
                .to_vec(),
            max_body_bytes: 65536,
            per_try_timeout: None,
        }
    }
}

/// What one health checker probes: a target through its cluster's gateway, with one
/// policy. The health board is keyed by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProbeSpec {
    pub target: TargetRef,
    /// The instances of the target's cluster's gateway, tried in turn until one answers.
    pub gateways: Vec<Address>,
    pub check: HealthCheck,
    /// The member cluster whose Envoy sends the scheme's traffic (its primary's): the
    /// probe presents that Envoy's certificate when the controller has it, so the check
    /// passes only while that Envoy could cross too (an expired or untrusted Envoy
    /// certificate fails it, as it fails the Envoy).
    pub caller: String,
}

impl ProbeSpec {
    /// The gateway instances, as people read them (`a, b`).
    pub fn gateway_list(&self) -> String {
        self.gateways
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Model {
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.get(name)
    }

    /// How `target` is probed for `scheme` (None if its cluster is unknown, which a
    /// validated model rules out).
    pub fn probe_spec(&self, scheme: &Scheme, target: &TargetRef) -> Option<ProbeSpec> {
        let cluster = self.clusters.get(&target.cluster)?;
        Some(ProbeSpec {
            target: target.clone(),
            gateways: cluster.gateways().cloned().collect(),
            check: scheme.health_check.clone(),
            caller: scheme.primary.cluster.clone(),
        })
    }

    /// The services of `self` that have ready endpoints again after having none in
    /// `before` (Kubernetes: an emptied EndpointSlice filled again).
    pub fn endpoints_returned(&self, before: &Model) -> Vec<TargetRef> {
        let mut back = Vec::new();
        for (name, cluster) in &self.clusters {
            for (service_name, service) in &cluster.services {
                let was_empty = before
                    .cluster(name)
                    .and_then(|c| c.services.get(service_name))
                    .is_some_and(|s| s.endpoints.is_empty());
                if was_empty && !service.endpoints.is_empty() {
                    back.push(TargetRef {
                        cluster: name.clone(),
                        service: service_name.clone(),
                    });
                }
            }
        }
        back
    }

    /// Every probe the configuration asks for.
    pub fn probe_specs(&self) -> std::collections::BTreeSet<ProbeSpec> {
        self.schemes
            .iter()
            .flat_map(|s| s.targets().filter_map(move |t| self.probe_spec(s, t)))
            .collect()
    }

    /// The protocol of `target`'s service in its own cluster (the default when the model
    /// does not know it, which a validated model rules out).
    pub fn protocol(&self, target: &TargetRef) -> Protocol {
        self.clusters
            .get(&target.cluster)
            .and_then(|c| c.services.get(&target.service))
            .map(|s| s.protocol)
            .unwrap_or_default()
    }

    /// The scheme whose primary is `service` in `cluster`.
    pub fn scheme_for_primary(&self, cluster: &str, service: &ServiceName) -> Option<&Scheme> {
        self.schemes
            .iter()
            .find(|s| s.primary.cluster == cluster && &s.primary.service == service)
    }

    /// Schemes whose primary runs in `cluster`: the content of that cluster's table.
    pub fn schemes_of(&self, cluster: &str) -> impl Iterator<Item = &Scheme> {
        self.schemes
            .iter()
            .filter(move |s| s.primary.cluster == cluster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_whose_endpoints_come_back_is_named_once() {
        let full = crate::testing::example_model();
        let mut emptied = full.clone();
        let east = ServiceName::new("apps", "foo");
        if let Some(c) = emptied.clusters.get_mut("east")
            && let Some(s) = c.services.get_mut(&east)
        {
            s.endpoints.clear();
        }
        assert_eq!(
            full.endpoints_returned(&emptied),
            [TargetRef {
                cluster: "east".into(),
                service: east,
            }]
        );
        // Emptied, or unchanged: nothing came back.
        assert!(emptied.endpoints_returned(&full).is_empty());
        assert!(full.endpoints_returned(&full).is_empty());
    }

    #[test]
    fn addresses_parse_and_print() {
        let a = Address::parse("127.0.2.1:15443").unwrap();
        assert!(a.is_ip());
        assert_eq!(a.to_string(), "127.0.2.1:15443");
        let a = Address::parse("[::1]:80").unwrap();
        assert_eq!(a.to_string(), "[::1]:80");
        let a = Address::parse("Gateway.West.example:443").unwrap();
        assert_eq!(a.host, Host::Name("gateway.west.example".into()));
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            "bad_host:80",
            ":80",
            "-x:80",
            "10.0.0.1.5:80",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_follow_internals() {
        let t = TargetRef {
            cluster: "west".into(),
            service: ServiceName::new("apps", "foo"),
        };
        assert_eq!(t.envoy_cluster(), "detour|west|apps|foo");
        assert_eq!(t.service.authority(), "foo.apps");
        assert_eq!(
            istio_cluster(&t.service, 8080),
            "outbound|8080||foo.apps.svc.cluster.local"
        );
    }

    #[test]
    fn gloo_and_kgateway_name_a_service_port_as_their_sources_do() {
        let foo = ServiceName::new("apps", "foo");
        // Gloo Edge: discovery's Upstream apps-foo-8080 in gloo-system, its cluster
        // NAME_NAMESPACE.
        assert_eq!(
            gloo_edge_cluster(&foo, 8080).as_deref(),
            Some("apps-foo-8080_gloo-system")
        );
        // A Service as Gloo's route destination: the in-memory Upstream's cluster, in
        // the spelling of current releases and of those that added the Service.
        assert_eq!(
            gloo_service_clusters(&foo, 8080),
            [
                "kube-svc:apps-foo-8080_apps",
                "kube-svc:apps-foo-8080_apps_apps_foo_8080"
            ]
        );
        // kgateway: kube_NAMESPACE_NAME_PORT (its docs' kube_httpbin_httpbin_8000).
        assert_eq!(
            kgateway_cluster(&ServiceName::new("httpbin", "httpbin"), 8000),
            "kube_httpbin_httpbin_8000"
        );
        // Over 63 characters Gloo hashes the Upstream name: detour does not guess it.
        let long = ServiceName::new(&"n".repeat(30), &"s".repeat(30));
        assert_eq!(gloo_edge_cluster(&long, 8080), None);
        assert!(gloo_service_clusters(&long, 8080).is_empty());
        let edge = ServiceName::new(&"n".repeat(29), &"s".repeat(28));
        assert_eq!(
            gloo_edge_cluster(&edge, 8080).map(|n| n.len()),
            Some(63 + "_gloo-system".len())
        );
    }

    #[test]
    fn checks_say_what_they_ask() {
        assert_eq!(CheckKind::default().to_string(), "GET /healthz");
        let grpc = CheckKind::Grpc {
            service_name: String::new(),
        };
        assert_eq!(grpc.to_string(), "gRPC Health/Check of \"\"");
    }

    #[test]
    fn http2_and_grpc_speak_http2() {
        assert_eq!(Protocol::default(), Protocol::Http);
        assert!(!Protocol::Http.is_http2());
        assert!(Protocol::Http2.is_http2());
        assert!(Protocol::Grpc.is_http2());
        assert_eq!(Protocol::Grpc.to_string(), "grpc");
        for p in Protocol::ALL {
            assert_eq!(Protocol::parse(p.as_str()), Some(p));
        }
        assert_eq!(Protocol::parse("GRPC"), None);
        assert_eq!(Protocol::parse("h2c"), None);
    }
}
