//! The controller's Prometheus metrics (`/metrics`, Prometheus text format).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `detour_config_reloads_total` | counter | `result` = success \| error |
//! | `detour_config_last_reload_successful` | gauge | |
//! | `detour_member_clusters`, `detour_schemes` | gauge | |
//! | `detour_table_version_info` | gauge (1) | `cluster`, `version` |
//! | `detour_table_updates_total` | counter | `cluster` |
//! | `detour_table_bytes` | gauge | `cluster` (its newest table, served or not) |
//! | `detour_table_max_bytes` | gauge | (`--max-table-bytes`, the filters' `maxTableBytes`) |
//! | `detour_tables_refused_total` | counter | `cluster` (over the limit: not served) |
//! | `detour_target_health` | gauge (1 = current state) | `cluster`, `namespace`, `name`, `state` |
//! | `detour_health_checks_total` | counter | `cluster`, `namespace`, `name`, `result` = success \| failure \| timeout \| error |
//! | `detour_health_transitions_total` | counter | `cluster`, `namespace`, `name`, `to` |
//! | `detour_table_requests_total` | counter | `code` |
//! | `detour_long_polls_in_flight` | gauge | |
//! | `detour_kube_*` | | see `detour_kube::metrics` |
//! | `detour_tls_handshake_failures_total` | counter | |
//! | `detour_certificate_expiry_seconds` | gauge (seconds left; negative once expired) | `file`, `identity` |

use detour_core::model::TargetRef;
use detour_filter::health::Health;
use detour_kube::metrics::KubeMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub cluster: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    #[prometheus(flatten)]
    pub target: TargetLabels,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    #[prometheus(flatten)]
    pub target: TargetLabels,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    #[prometheus(flatten)]
    pub target: TargetLabels,
    pub to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// Relative to the certificate directory, e.g. `clusters/west/gateway.crt`.
    pub file: String,
    /// Its `spiffe://detour.dev/...` URI, or `CA`.
    pub identity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: u16,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub config_last_reload_successful: Gauge,
    pub member_clusters: Gauge,
    pub schemes: Gauge,
    pub table_version: Family<VersionLabels, Gauge>,
    pub table_updates: Family<ClusterLabels, Counter>,
    pub table_bytes: Family<ClusterLabels, Gauge>,
    pub table_max_bytes: Gauge,
    pub tables_refused: Family<ClusterLabels, Counter>,
    pub target_health: Family<StateLabels, Gauge>,
    pub health_checks: Family<CheckLabels, Counter>,
    pub health_transitions: Family<TransitionLabels, Counter>,
    pub table_requests: Family<CodeLabels, Counter>,
    pub long_polls_in_flight: Gauge,
    /// The Kubernetes side's, registered here (`detour_kube_*`).
    pub kube: KubeMetrics,
    /// Connections to the mTLS table API whose handshake failed (no client
    /// certificate, one from another CA, expired, ...) or timed out.
    pub tls_handshake_failures: Counter,
    /// Seconds each certificate of `serve --certs` has left.
    pub certificate_expiry: Family<CertificateLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

const STATES: [Health; 3] = [Health::Healthy, Health::Unhealthy, Health::Unknown];

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("detour");
        let m = Metrics {
            registry: Registry::default(),
            config_reloads: Family::default(),
            config_last_reload_successful: Gauge::default(),
            member_clusters: Gauge::default(),
            schemes: Gauge::default(),
            table_version: Family::default(),
            table_updates: Family::default(),
            table_bytes: Family::default(),
            table_max_bytes: Gauge::default(),
            tables_refused: Family::default(),
            target_health: Family::default(),
            health_checks: Family::default(),
            health_transitions: Family::default(),
            table_requests: Family::default(),
            long_polls_in_flight: Gauge::default(),
            kube: KubeMetrics::new(),
            tls_handshake_failures: Counter::default(),
            certificate_expiry: Family::default(),
        };
        registry.register(
            "config_reloads",
            "Configuration loads after a change, by result",
            m.config_reloads.clone(),
        );
        registry.register(
            "config_last_reload_successful",
            "1 when the last configuration load succeeded, 0 when the last good one is still serving",
            m.config_last_reload_successful.clone(),
        );
        registry.register(
            "member_clusters",
            "Member clusters in the serving configuration",
            m.member_clusters.clone(),
        );
        registry.register(
            "schemes",
            "Failover schemes in the serving configuration",
            m.schemes.clone(),
        );
        registry.register(
            "table_version_info",
            "The version (ETag) of each member cluster's table",
            m.table_version.clone(),
        );
        registry.register(
            "table_updates",
            "New table versions per member cluster",
            m.table_updates.clone(),
        );
        registry.register(
            "table_bytes",
            "Size of each member cluster's newest table (its JSON), served or not",
            m.table_bytes.clone(),
        );
        registry.register(
            "table_max_bytes",
            "The largest table served (the filters' maxTableBytes); a larger one is refused",
            m.table_max_bytes.clone(),
        );
        registry.register(
            "tables_refused",
            "Tables not served because they were over the filters' maxTableBytes",
            m.tables_refused.clone(),
        );
        registry.register(
            "target_health",
            "Health of each checked target (1 on its current state)",
            m.target_health.clone(),
        );
        registry.register(
            "health_checks",
            "Health checks by result",
            m.health_checks.clone(),
        );
        registry.register(
            "health_transitions",
            "Health changes of each target, by new state",
            m.health_transitions.clone(),
        );
        registry.register(
            "table_requests",
            "Table API answers by HTTP status",
            m.table_requests.clone(),
        );
        registry.register(
            "long_polls_in_flight",
            "Table requests waiting for a new version",
            m.long_polls_in_flight.clone(),
        );
        m.kube.register(&mut registry);
        registry.register(
            "tls_handshake_failures",
            "Table API connections refused during the TLS handshake",
            m.tls_handshake_failures.clone(),
        );
        registry.register(
            "certificate_expiry_seconds",
            "Seconds until each certificate of the federation expires (negative: expired)",
            m.certificate_expiry.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    pub fn target_labels(t: &TargetRef) -> TargetLabels {
        TargetLabels {
            cluster: t.cluster.clone(),
            namespace: t.service.namespace.clone(),
            name: t.service.name.clone(),
        }
    }

    pub fn set_target_health(&self, t: &TargetRef, health: Health) {
        let target = Metrics::target_labels(t);
        for state in STATES {
            let labels = StateLabels {
                target: target.clone(),
                state: state.as_str(),
            };
            self.target_health
                .get_or_create(&labels)
                .set(i64::from(state == health));
        }
    }

    pub fn forget_target(&self, t: &TargetRef) {
        let target = Metrics::target_labels(t);
        for state in STATES {
            self.target_health.remove(&StateLabels {
                target: target.clone(),
                state: state.as_str(),
            });
        }
    }
}

/// Counts one waiting long-poll for as long as it lives (a client that disconnects drops
/// the request future, and with it the guard).
pub struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    pub fn new(gauge: &'a Gauge) -> InFlight<'a> {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use detour_core::model::ServiceName;

    #[test]
    fn exposes_prefixed_names() {
        let m = Metrics::new();
        m.config_reloads
            .get_or_create(&ResultLabels { result: "error" })
            .inc();
        let t = TargetRef {
            cluster: "west".into(),
            service: ServiceName::new("apps", "foo"),
        };
        m.set_target_health(&t, Health::Unhealthy);
        {
            let _waiting = InFlight::new(&m.long_polls_in_flight);
            assert!(m.encode().contains("detour_long_polls_in_flight 1"));
        }
        let text = m.encode();
        assert!(
            text.contains("detour_config_reloads_total{result=\"error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "detour_target_health{cluster=\"west\",namespace=\"apps\",name=\"foo\",state=\"Unhealthy\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("detour_long_polls_in_flight 0"), "{text}");
        m.forget_target(&t);
        assert!(!m.encode().contains("state=\"Unhealthy\""));
    }
}
