//! The status API's document (`GET /v1/status`): member clusters and their gateways,
//! every scheme with its groups, each target's health and since when, the active group
//! and why, and the recent events. The page at `/ui` and `detour status` both read it,
//! and `detour status` deserialises these very types, so the two cannot drift apart.
//!
//! Times are RFC 3339 strings (UTC, to the millisecond). [`tracker`] makes the document
//! from each decision, remembering since when things are as they are, and [`events`]
//! keeps what happened.

pub mod events;
pub mod tracker;

use detour_filter::health::Health;
use events::Event;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// `apiVersion` of the document; a reader refuses another.
pub const STATUS_API_VERSION: &str = "detour.dev/status/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub api_version: String,
    /// Changes exactly when the content does (also the `ETag`).
    pub version: String,
    /// When this version was made (RFC 3339).
    pub generated_at: String,
    pub controller: ControllerInfo,
    pub summary: Summary,
    pub clusters: Vec<ClusterReport>,
    /// In the configuration's order (namespace, then name).
    pub schemes: Vec<SchemeReport>,
    /// Every service of every member cluster (listed in file mode, discovered in
    /// Kubernetes), by cluster, then namespace and name, each with the schemes that name
    /// it. Absent from an older controller's document.
    #[serde(default)]
    pub services: Vec<ServiceReport>,
    /// The recent events, newest first.
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerInfo {
    /// `files` or `kubernetes`.
    pub source: String,
    /// Every target was checked once (the same as `/readyz`).
    pub ready: bool,
    /// The outcome of the last configuration load (file mode; absent in Kubernetes,
    /// where each object's own status says whether it is valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigState>,
    /// The certificates of the federation the controller can see (`serve --certs`),
    /// with when each expires; absent when it sees none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateReport>,
}

/// A certificate shown with a warning when it has less than this left: time for
/// `detour certs init` to renew it (it renews a third before the end).
pub const EXPIRY_WARNING: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// One certificate and its expiry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateReport {
    /// Its file, relative to the certificate directory (`clusters/west/gateway.crt`).
    pub file: String,
    /// Whom it speaks for (its `spiffe://detour.dev/...` URI), or `CA`.
    pub identity: String,
    /// RFC 3339, UTC.
    pub not_after: String,
    /// Less than [`EXPIRY_WARNING`] left, or expired.
    pub expiring: bool,
}

impl CertificateReport {
    pub fn new(file: String, identity: String, not_after: SystemTime, now: SystemTime) -> Self {
        CertificateReport {
            file,
            identity,
            not_after: rfc3339_ms(not_after),
            expiring: not_after < now + EXPIRY_WARNING,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigState {
    pub outcome: ConfigOutcome,
    /// When the source read it (RFC 3339).
    pub at: String,
    /// Refused: every problem, one per line (file, document, field, what is wrong).
    /// Free text quoting the documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigOutcome {
    Applied,
    /// The last good configuration keeps serving.
    Refused,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub clusters: usize,
    pub schemes: usize,
    /// Schemes whose traffic is not on their primary.
    pub failed_over: usize,
    /// Targets of every scheme by health (a target named by two schemes counts twice).
    pub targets: HealthCounts,
    /// Services of every member cluster, protected by a scheme or not.
    #[serde(default)]
    pub services: ServiceCounts,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCounts {
    /// Named by at least one scheme, as its primary or a target.
    pub protected: usize,
    /// Named by none: a failure there moves no traffic anywhere.
    pub unprotected: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCounts {
    pub healthy: usize,
    pub unhealthy: usize,
    pub unknown: usize,
}

impl HealthCounts {
    pub fn add(&mut self, health: Health) {
        match health {
            Health::Healthy => self.healthy += 1,
            Health::Unhealthy => self.unhealthy += 1,
            Health::Unknown => self.unknown += 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    pub name: String,
    /// `HOST:PORT` of its east-west gateway.
    pub gateway: String,
    /// Services known in it (listed in file mode, discovered in Kubernetes).
    pub services: usize,
    /// Schemes whose primary runs in it (the content of its table).
    pub primaries: usize,
    /// The version of its table now being served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_version: Option<String>,
    /// Bytes of its newest table, and the filters' limit (`maxTableBytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_bytes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_max_bytes: Option<usize>,
    /// Set past 80% of the limit, and when the newest table is over it (not served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_warning: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemeReport {
    /// `namespace/name` of the FailoverScheme.
    pub name: String,
    pub primary: TargetId,
    /// 0 = the primary, n = the nth failover group: where a request goes now, as the
    /// filter's own selection code decides on the health the tables carry.
    pub active_group: usize,
    /// `primary-healthy`, `failed-over`, `nothing-healthy-trying-unknown` or
    /// `all-unhealthy-trying-primary`.
    pub reason: String,
    /// The same in a sentence.
    pub message: String,
    /// Since when `activeGroup` takes the traffic (at the latest, the controller's start).
    pub active_since: String,
    /// `failback.stableFor` in milliseconds.
    pub stable_for_ms: u64,
    /// Group 0 is the primary alone; then the failover groups in priority order.
    pub groups: Vec<Vec<TargetReport>>,
}

/// One service of one member cluster, and what protects it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceReport {
    pub cluster: String,
    /// `namespace/name`.
    pub service: String,
    pub port: u16,
    /// `http`, `http2` or `grpc`.
    pub protocol: String,
    /// Every scheme naming this service in this cluster, in the schemes' order; empty:
    /// unprotected.
    pub protection: Vec<Protection>,
}

impl ServiceReport {
    pub fn is_protected(&self) -> bool {
        !self.protection.is_empty()
    }
}

/// A scheme naming a service of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Protection {
    /// `namespace/name` of the FailoverScheme.
    pub scheme: String,
    pub role: Role,
    /// 0 for the primary, n for a target of the nth failover group.
    pub group: usize,
}

/// What a service is to a scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The scheme protects it: its traffic fails over when it is down.
    Primary,
    /// Traffic of the scheme's primary comes to it when the groups before it are down.
    Target,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetId {
    pub cluster: String,
    /// `namespace/name`.
    pub service: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetReport {
    pub cluster: String,
    /// `namespace/name`.
    pub service: String,
    pub weight: u32,
    /// As this scheme's table gives it (failback damping included).
    pub health: Health,
    /// Since when it has had that health (RFC 3339).
    pub since: String,
    pub basis: Basis,
    /// `Recovering`: when the damping window ends and the target is Healthy again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovering_until: Option<String>,
    /// What the last check saw, while the checks do not call it Healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
}

/// Why a target has its health (mirrors [`crate::tables::HealthBasis`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Basis {
    /// The active checks' verdict.
    Checked,
    /// Not checked yet.
    Unchecked,
    /// The service has no ready endpoint in its cluster.
    NoReadyEndpoints,
    /// Passing checks again, reported Unhealthy until `recoveringUntil` (failback damping).
    Recovering,
}

/// RFC 3339, UTC, to the millisecond (`2026-11-24T16:33:05.123Z`).
pub fn rfc3339_ms(t: SystemTime) -> String {
    Timestamp::try_from(t)
        .ok()
        .and_then(|t| Timestamp::from_millisecond(t.as_millisecond()).ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// RFC 3339 to the second (what Kubernetes status shows, and compares equal when re-read).
pub fn rfc3339(t: SystemTime) -> String {
    Timestamp::try_from(t)
        .ok()
        .and_then(|t| Timestamp::from_second(t.as_second()).ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Parses what [`rfc3339_ms`] writes (any RFC 3339 time).
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    text.parse::<Timestamp>().ok().map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_to_the_millisecond_and_read_back() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_000_000_123_456);
        let text = rfc3339_ms(t);
        assert_eq!(text, "2025-11-24T16:00:00.123Z");
        assert_eq!(
            parse_rfc3339(&text),
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_000_123))
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
