//! The leader writes each member cluster's mTLS material (issue 4: the federation CA, the
//! cluster's gateway and client certificates) as Secrets in that cluster, one per kind of
//! Envoy that mounts them ([`Mount`]: the gateway's server key apart from the clients'
//! keys), and writes them again before their certificates expire. Each holds the PEM
//! files and the Envoy SDS files of `detour certs init`'s `sds/` directory, so a Secret
//! volume mounted there is what a rendered Envoy watches: the kubelet's update of the
//! volume (an atomic `..data` swap) reaches running Envoys.
//!
//! The certificates come from an [`Issuer`]: "material for cluster X, valid from A to B"
//! ([`super::issuer`] is the real one, from `detour certs init`'s CA). The Secret carries
//! those two times as annotations, and what the material was issued for (the gateway's
//! name, the CA), so any leader — a new one after a take-over too — knows when it is due
//! without parsing certificates. It is renewed two thirds into its validity (as
//! `detour certs init` and cert-manager do), which leaves a third of the lifetime to
//! retry if a cluster is unreachable when it falls due; and at once when what it would be
//! issued for changed.

use super::lease::Leadership;
use super::{Error, FIELD_MANAGER};
use crate::metrics::KubeMetrics;
use detour_core::model::Host;
use detour_core::pki::layout::Mount;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

/// Names of the Secrets in every member cluster (the RBAC of `detour cluster register`
/// allows writing these names only), in [`Mount::ALL`] order.
pub const SECRET_NAMES: [&str; 2] = ["detour-mtls-gateway", "detour-mtls-client"];

/// The Secret `mount` reads.
pub fn secret_name(mount: Mount) -> &'static str {
    match mount {
        Mount::Gateway => SECRET_NAMES[0],
        Mount::Client => SECRET_NAMES[1],
    }
}

/// The files of `data` (`NAME.crt`, `NAME.key`, `NAME.json`) that `mount` holds: the
/// trust (`ca.*`) and its roles' own, never another role's key.
pub fn mount_data(data: &BTreeMap<String, Vec<u8>>, mount: Mount) -> BTreeMap<String, Vec<u8>> {
    data.iter()
        .filter(|(file, _)| {
            let stem = file.split('.').next().unwrap_or_default();
            stem == "ca" || mount.roles().iter().any(|r| r.as_str() == stem)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
/// Namespace of that Secret unless `serve --member-namespace` says otherwise.
pub const DEFAULT_NAMESPACE: &str = "detour-system";
pub const NOT_BEFORE: &str = "detour.dev/not-before";
pub const NOT_AFTER: &str = "detour.dev/not-after";
pub const ISSUED_FOR: &str = "detour.dev/issued-for";
pub const CLUSTER_LABEL: &str = "detour.dev/member-cluster";
/// After a failed write, try again this much later.
const RETRY: Duration = Duration::from_secs(30);

/// One member cluster's mTLS material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    /// The Secret's data: file name → contents (PEM).
    pub data: BTreeMap<String, Vec<u8>>,
    /// When the earliest-expiring certificate in it became valid, and when it expires.
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Where material comes from: issue 4's certificate issuer, a fake in tests.
pub trait Issuer: Send + Sync {
    /// What material issued now for `cluster`, whose gateway is `gateway`, would be for
    /// (names, CA): a Secret issued for anything else is issued again.
    fn subject(&self, cluster: &str, gateway: &Host) -> String;
    fn issue(&self, cluster: &str, gateway: &Host, now: SystemTime) -> Result<Material, String>;
}

/// A member cluster as the Secret writer needs it.
#[derive(Clone)]
pub struct Member {
    pub gateway: Host,
    pub client: Client,
}

/// What to do about one cluster's Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Fresh: look again at `until`.
    Keep { until: SystemTime },
    /// Missing, unreadable, issued for something else, or due: issue and write.
    Write,
}

/// When material valid from `not_before` to `not_after` is renewed.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    not_before + lifetime.mul_f64(2.0 / 3.0)
}

/// Decides from the Secret as it is now in the member cluster, and what material for
/// `cluster` would be issued for now (`subject`).
pub fn plan(existing: Option<&Secret>, cluster: &str, subject: &str, now: SystemTime) -> Plan {
    let Some(secret) = existing else {
        return Plan::Write;
    };
    let meta = &secret.metadata;
    let ours = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(CLUSTER_LABEL))
        .is_some_and(|c| c == cluster)
        && meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(ISSUED_FOR))
            .is_some_and(|s| s == subject);
    let time = |key: &str| annotated(secret, key);
    match (ours, time(NOT_BEFORE), time(NOT_AFTER)) {
        (true, Some(nb), Some(na)) if now < renew_at(nb, na) => Plan::Keep {
            until: renew_at(nb, na),
        },
        _ => Plan::Write,
    }
}

/// The time in the annotation `key` of `secret`, if it has a readable one.
fn annotated(secret: &Secret, key: &str) -> Option<SystemTime> {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map(SystemTime::from)
}

/// The Secret of `mount` holding its part of `material` for `cluster`, issued for
/// `subject`.
pub fn secret(
    mount: Mount,
    namespace: &str,
    cluster: &str,
    subject: &str,
    material: &Material,
) -> Secret {
    let stamp = |t: SystemTime| {
        Timestamp::try_from(t)
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(mount).to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "detour".to_string(),
                ),
                (CLUSTER_LABEL.to_string(), cluster.to_string()),
            ])),
            annotations: Some(BTreeMap::from([
                (NOT_BEFORE.to_string(), stamp(material.not_before)),
                (NOT_AFTER.to_string(), stamp(material.not_after)),
                (ISSUED_FOR.to_string(), subject.to_string()),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(
            mount_data(&material.data, mount)
                .into_iter()
                .map(|(k, v)| (k, ByteString(v)))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// Writes and renews the Secret of every member cluster (leader only).
#[derive(Clone)]
pub struct SecretWriter {
    /// The newest issuer: a change of CA (or of the CAs trusted beside it) replaces it,
    /// and every Secret is issued again.
    issuer: watch::Receiver<Arc<dyn Issuer>>,
    namespace: String,
    leadership: Leadership,
    metrics: Arc<KubeMetrics>,
}

impl SecretWriter {
    /// A writer issuing with `issuer` for good.
    pub fn new(
        issuer: Arc<dyn Issuer>,
        namespace: &str,
        leadership: Leadership,
        metrics: Arc<KubeMetrics>,
    ) -> SecretWriter {
        SecretWriter::watching(watch::channel(issuer).1, namespace, leadership, metrics)
    }

    /// A writer issuing with the newest issuer of `issuer`.
    pub fn watching(
        issuer: watch::Receiver<Arc<dyn Issuer>>,
        namespace: &str,
        leadership: Leadership,
        metrics: Arc<KubeMetrics>,
    ) -> SecretWriter {
        SecretWriter {
            issuer,
            namespace: namespace.to_string(),
            leadership,
            metrics,
        }
    }

    /// Makes `cluster`'s Secrets current; returns when to look again. Both are issued
    /// and written together when either is missing, foreign or due, so that they never
    /// carry certificates of two issues.
    pub async fn sync(
        &self,
        cluster: &str,
        member: &Member,
        now: SystemTime,
    ) -> Result<SystemTime, Error> {
        self.leadership.check()?;
        let api: Api<Secret> = Api::namespaced(member.client.clone(), &self.namespace);
        let issuer = self.issuer.borrow().clone();
        let subject = issuer.subject(cluster, &member.gateway);
        // When each fresh Secret falls due, and when it expires.
        let mut fresh: Vec<(SystemTime, Option<SystemTime>)> = Vec::new();
        for mount in Mount::ALL {
            let existing = api.get_opt(secret_name(mount)).await?;
            if let Plan::Keep { until } = plan(existing.as_ref(), cluster, &subject, now) {
                fresh.push((until, existing.and_then(|s| annotated(&s, NOT_AFTER))));
            }
        }
        if fresh.len() == Mount::ALL.len()
            && let Some(until) = fresh.iter().map(|(until, _)| *until).min()
        {
            if let Some(at) = fresh.iter().filter_map(|(_, expires)| *expires).min() {
                self.metrics.set_member_expiry(cluster, at);
            }
            return Ok(until);
        }
        let material =
            issuer
                .issue(cluster, &member.gateway, now)
                .map_err(|why| Error::Material {
                    cluster: cluster.to_string(),
                    why,
                })?;
        for mount in Mount::ALL {
            let secret = secret(mount, &self.namespace, cluster, &subject, &material);
            // Checked again right before each write: the lease may have gone meanwhile.
            self.leadership.check()?;
            api.patch(
                secret_name(mount),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await?;
            self.metrics.kube_write("secrets");
        }
        self.metrics.set_member_expiry(cluster, material.not_after);
        info!(%cluster, namespace = %self.namespace, "wrote the mTLS Secrets");
        Ok(renew_at(material.not_before, material.not_after))
    }
}

/// Keeps every connected member cluster's Secret current while this replica leads.
pub async fn run(
    writer: SecretWriter,
    mut members: watch::Receiver<BTreeMap<String, Member>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut leading = writer.leadership.subscribe();
    let mut issuers = writer.issuer.clone();
    // A writer made with one issuer for good has no sender: nothing to wait for.
    let mut issuers_open = true;
    loop {
        let mut next: Option<SystemTime> = None;
        if writer.leadership.is_leader() {
            let current = members.borrow_and_update().clone();
            for (cluster, member) in current {
                let span = info_span!("mtls_secret", %cluster);
                let at = match writer
                    .sync(&cluster, &member, SystemTime::now())
                    .instrument(span)
                    .await
                {
                    Ok(until) => until,
                    Err(Error::NotLeader) => break,
                    Err(e) => {
                        writer.metrics.kube_error("secrets", &e);
                        warn!(%cluster, error = %e, "cannot write the mTLS Secret; retrying");
                        SystemTime::now() + RETRY
                    }
                };
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        let wait = next
            .map(|n| n.duration_since(SystemTime::now()).unwrap_or_default())
            .unwrap_or(Duration::MAX);
        tokio::select! {
            () = sleep(wait) => {}
            r = members.changed() => if r.is_err() { return },
            r = leading.changed() => if r.is_err() { return },
            r = issuers.changed(), if issuers_open => {
                issuers_open = r.is_ok();
                if issuers_open {
                    info!("the CA changed: every member cluster's Secrets are issued again");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn sleep(wait: Duration) {
    match tokio::time::Instant::now().checked_add(wait) {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
