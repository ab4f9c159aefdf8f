//! What a test asks for: the member clusters, the one failover scheme, and its timings.
//! Pure data, plus the time bounds that follow from it (which tests assert).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A service, `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
}

impl Service {
    pub fn new(namespace: &str, name: &str) -> Service {
        Service {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// The `Host` clients send for it, `name.namespace` (e.g. `foo.apps`).
    pub fn authority(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    /// `namespace/name`, as tables and the upstream name it.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The Envoy cluster that means "this service as it runs in `cluster`"
    /// (docs/internals.md).
    pub fn envoy_cluster(&self, cluster: &str) -> String {
        format!("detour|{cluster}|{}|{}", self.namespace, self.name)
    }
}

/// The scheme's `healthCheck`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

/// The scheme's `replay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub methods: Vec<String>,
    pub max_body_bytes: u64,
    /// `perTryTimeout`: an attempt of a replayable request hanging this long goes on;
    /// `None` writes no field (no per-try timeout).
    pub per_try_timeout: Option<Duration>,
}

/// What the service speaks (`services[].protocol`), and so which server a member runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1 (the default; the field is not written): the `upstream` binary.
    #[default]
    Http,
    /// h2c: the `upstream` binary, which speaks HTTP/1.1 and HTTP/2 alike.
    Http2,
    /// gRPC: `e2e/grpc/server.py` (grpcio from `.venv`), checked with grpc.health.v1
    /// (`healthCheck.grpc` instead of `path`).
    Grpc,
}

impl Protocol {
    /// The value of `services[].protocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
        }
    }
}

/// Which table server the Envoys poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControllerKind {
    /// `detour serve` on the generated config.
    Detour,
    /// No controller is started; the Envoys point at the controller address anyway, so
    /// a test can start its own table server there (a fake serving bad tables) or
    /// observe the filter with no controller at all.
    External,
}

/// Everything a topology is built from. Start from [`Setup::for_tests`] or
/// [`Setup::for_demo`] and change fields with struct update syntax.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Member clusters; the kth (from 1) lives on 127.0.k.0/24.
    pub clusters: Vec<String>,
    /// The service the scheme protects: the primary's, and the one every cluster runs
    /// unless [`Setup::services`] names another.
    pub service: Service,
    /// Clusters that run another service than [`Setup::service`] (name and namespace):
    /// their `MemberCluster` declares it, their upstreams serve it, and the scheme's
    /// target in that cluster names it (a failover to another service, as Gloo's
    /// `blue` → `green`). A cluster not named runs `service`.
    pub services: BTreeMap<String, Service>,
    /// What the service speaks in every member cluster.
    pub protocol: Protocol,
    /// The cluster whose service is the scheme's primary.
    pub primary: String,
    /// The scheme's failover groups in priority order, each a list of clusters (one
    /// target each, with its weight from [`Setup::weights`]).
    pub failover_groups: Vec<Vec<String>>,
    /// The `weight` of the scheme's target in a cluster, e.g. 3 and 1 for two targets
    /// sharing a group; a cluster not named weighs 1.
    pub weights: BTreeMap<String, u32>,
    pub health: HealthCheck,
    /// `failback.stableFor`.
    pub stable_for: Duration,
    pub replay: Replay,
    /// Issue certificates with `detour certs init` and run every hop between clusters,
    /// and every table fetch, over mTLS (the default, as in production); `false` runs
    /// them in plaintext.
    pub mtls: bool,
    pub controller: ControllerKind,
    /// A JSON merge patch (RFC 7386) for the filter configuration `detour render envoy`
    /// writes for every Envoy, e.g. `{"passive": {"enabled": false}}`; `None` keeps the
    /// rendered configuration as it is.
    pub filter_config: Option<serde_json::Value>,
    /// Instances of the service per member cluster (each an upstream process on its own
    /// address, all listed in the `MemberCluster`'s endpoints); a cluster not named runs
    /// one.
    pub instances: BTreeMap<String, usize>,
    /// East-west gateway instances per member cluster (the `MemberCluster`'s
    /// `gateway.addresses`, one Envoy listening on each); a cluster not named has one.
    pub gateways: BTreeMap<String, usize>,
    /// Clusters whose gateways are Envoys of their own: the Envoy clients enter through
    /// runs no gateway listener, so stopping every gateway of the cluster leaves its
    /// ingress up. Elsewhere the ingress Envoy is also the first gateway instance.
    pub dedicated_gateways: BTreeSet<String>,
    /// The whole-request timeout of every rendered route (ingress and gateway), changed
    /// in the rendered configs by the harness; `None` keeps what `detour render envoy`
    /// writes. Lets a test of slow requests run in seconds.
    pub route_timeout: Option<Duration>,
}

/// How late the filter may learn of a new table: its default poll interval, the slow
/// path when long-polling is not in play.
pub const TABLE_PROPAGATION: Duration = Duration::from_secs(1);

/// Slack for a two-core machine running two topologies (six Envoys) at once.
pub const SCHEDULING_MARGIN: Duration = Duration::from_millis(1500);

impl Setup {
    /// east → [west] → [south] for `apps/foo`, with checks fast enough that a test sees
    /// a failover in a few seconds.
    pub fn for_tests() -> Setup {
        Setup {
            clusters: vec!["east".into(), "west".into(), "south".into()],
            service: Service::new("apps", "foo"),
            services: BTreeMap::new(),
            protocol: Protocol::Http,
            primary: "east".into(),
            failover_groups: vec![vec!["west".into()], vec!["south".into()]],
            weights: BTreeMap::new(),
            health: HealthCheck {
                path: crate::upstream::HEALTH_PATH.into(),
                interval: Duration::from_millis(200),
                timeout: Duration::from_millis(200),
                unhealthy_threshold: 2,
                healthy_threshold: 2,
            },
            stable_for: Duration::from_millis(2000),
            replay: Replay {
                methods: ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]
                    .map(String::from)
                    .to_vec(),
                max_body_bytes: 65536,
                per_try_timeout: None,
            },
            mtls: true,
            controller: ControllerKind::Detour,
            filter_config: None,
            instances: BTreeMap::new(),
            gateways: BTreeMap::new(),
            dedicated_gateways: BTreeSet::new(),
            route_timeout: None,
        }
    }

    /// The same scheme with timings a person can follow: a check per second, failback
    /// after three stable seconds.
    pub fn for_demo() -> Setup {
        let mut setup = Setup::for_tests();
        setup.health.interval = Duration::from_secs(1);
        setup.health.timeout = Duration::from_millis(500);
        setup.stable_for = Duration::from_secs(3);
        setup
    }

    /// The service `cluster` runs (and the scheme's target there names).
    pub fn service_in(&self, cluster: &str) -> &Service {
        self.services.get(cluster).unwrap_or(&self.service)
    }

    /// The weight of the scheme's target in `cluster` (1 unless [`Setup::weights`] says).
    pub fn weight_of(&self, cluster: &str) -> u32 {
        self.weights.get(cluster).copied().unwrap_or(1)
    }

    /// How many instances of the service `cluster` runs (at least one).
    pub fn instances_in(&self, cluster: &str) -> usize {
        self.instances.get(cluster).copied().unwrap_or(1).max(1)
    }

    /// How many east-west gateway instances `cluster` has (at least one).
    pub fn gateways_in(&self, cluster: &str) -> usize {
        self.gateways.get(cluster).copied().unwrap_or(1).max(1)
    }

    /// Whether `cluster`'s gateways run in Envoys of their own.
    pub fn dedicated_gateway(&self, cluster: &str) -> bool {
        self.dedicated_gateways.contains(cluster)
    }

    /// The clusters of the primary and every failover group, primary first.
    pub fn scheme_clusters(&self) -> Vec<&str> {
        std::iter::once(self.primary.as_str())
            .chain(self.failover_groups.iter().flatten().map(String::as_str))
            .collect()
    }

    /// Longest the controller may take to call a dead target Unhealthy: the first
    /// failing check comes within one interval of the death, then `unhealthyThreshold-1`
    /// more intervals, and the last check may run into its timeout.
    pub fn detection_bound(&self) -> Duration {
        self.health.interval * self.health.unhealthy_threshold + self.health.timeout
    }

    /// Longest from a target's death to traffic leaving it, when only the controller's
    /// health checks notice (no passive detection).
    pub fn failover_bound(&self) -> Duration {
        self.detection_bound() + TABLE_PROPAGATION + SCHEDULING_MARGIN
    }

    /// Longest the controller may take to call a recovered target Healthy.
    pub fn recovery_bound(&self) -> Duration {
        self.health.interval * self.health.healthy_threshold + self.health.timeout
    }

    /// Longest from the primary serving again to traffic returning to it.
    pub fn failback_bound(&self) -> Duration {
        self.recovery_bound() + self.stable_for + TABLE_PROPAGATION + SCHEDULING_MARGIN
    }
}
