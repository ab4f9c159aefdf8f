//! The Kubernetes side's Prometheus metrics; the binary registers them with its own in
//! one registry, so `/metrics` shows them under the same `detour_` prefix.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `detour_kube_watch_events_total` | counter | `resource`, `cluster` (member cluster; "" = management), `event` = apply \| delete \| init \| error |
//! | `detour_kube_errors_total` | counter | `scope` = lease \| status \| secrets \| discovery, `error` |
//! | `detour_kube_writes_total` | counter | `resource` = failoverschemes/status \| memberclusters/status \| events \| secrets |
//! | `detour_kube_leader` | gauge | 1 while this replica holds the Lease |
//! | `detour_kube_leader_transitions_total` | counter | |
//! | `detour_kube_member_cluster_synced` | gauge | `cluster` (1 = listed and watched) |
//! | `detour_kube_member_certificates_expiry_timestamp_seconds` | gauge | `cluster`: when the earliest certificate of its mTLS Secrets expires (Unix time; as the leader last wrote or read them) |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    pub resource: &'static str,
    pub cluster: String,
    pub event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubeErrorLabels {
    pub scope: &'static str,
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: &'static str,
}

/// Cheap to clone: every clone counts into the same families.
#[derive(Clone, Debug, Default)]
pub struct KubeMetrics {
    pub kube_watch_events: Family<WatchLabels, Counter>,
    pub kube_errors: Family<KubeErrorLabels, Counter>,
    pub kube_writes: Family<ResourceLabels, Counter>,
    pub kube_leader: Gauge,
    pub kube_leader_transitions: Counter,
    pub kube_member_synced: Family<ClusterLabels, Gauge>,
    /// A timestamp rather than seconds left: the leader looks at the Secrets only when
    /// they fall due, and a timestamp stays right in between.
    pub kube_member_certificates_expiry: Family<ClusterLabels, Gauge>,
}

impl KubeMetrics {
    pub fn new() -> KubeMetrics {
        KubeMetrics::default()
    }

    /// Adds every family to `registry` (the binary's, prefixed `detour`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kube_watch_events",
            "Kubernetes watch events received, by resource, member cluster and kind of event",
            self.kube_watch_events.clone(),
        );
        registry.register(
            "kube_errors",
            "Errors talking to Kubernetes APIs, by what was being done and error",
            self.kube_errors.clone(),
        );
        registry.register(
            "kube_writes",
            "Writes to Kubernetes APIs (status, events, Secrets, the Lease), by resource",
            self.kube_writes.clone(),
        );
        registry.register(
            "kube_leader",
            "1 while this replica holds the leader Lease (and writes), else 0",
            self.kube_leader.clone(),
        );
        registry.register(
            "kube_leader_transitions",
            "Times this replica started or stopped leading",
            self.kube_leader_transitions.clone(),
        );
        registry.register(
            "kube_member_cluster_synced",
            "1 when a member cluster's Services and EndpointSlices are listed and watched",
            self.kube_member_synced.clone(),
        );
        registry.register(
            "kube_member_certificates_expiry_timestamp_seconds",
            "When the earliest certificate of a member cluster's mTLS Secrets expires (Unix time)",
            self.kube_member_certificates_expiry.clone(),
        );
    }

    /// Records when `cluster`'s member certificates expire.
    pub fn set_member_expiry(&self, cluster: &str, not_after: std::time::SystemTime) {
        let secs = not_after
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        self.kube_member_certificates_expiry
            .get_or_create(&ClusterLabels {
                cluster: cluster.to_string(),
            })
            .set(secs);
    }

    /// Counts an error of the Kubernetes side.
    pub fn kube_error(&self, scope: &'static str, error: &crate::Error) {
        self.kube_errors
            .get_or_create(&KubeErrorLabels {
                scope,
                error: error.metric_label(),
            })
            .inc();
    }

    pub fn kube_write(&self, resource: &'static str) {
        self.kube_writes
            .get_or_create(&ResourceLabels { resource })
            .inc();
    }

    pub fn set_leader(&self, leading: bool) {
        if (self.kube_leader.get() == 1) != leading {
            self.kube_leader_transitions.inc();
        }
        self.kube_leader.set(i64::from(leading));
    }

    pub fn watch_event(&self, resource: &'static str, cluster: &str, event: &'static str) {
        self.kube_watch_events
            .get_or_create(&WatchLabels {
                resource,
                cluster: cluster.to_string(),
                event,
            })
            .inc();
    }

    /// These metrics alone in the Prometheus text exposition, as `/metrics` shows them.
    pub fn encode(&self) -> String {
        let mut registry = Registry::with_prefix("detour");
        self.register(&mut registry);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}
