//! Status of FailoverSchemes and MemberClusters, written by the leader with server-side
//! apply (fieldManager `detour`) on the `/status` subresource, and the Events that go
//! with a change: failover, failback, rejection.
//!
//! [`plan_scheme`] and [`plan_cluster`] are pure: from an object, the status last
//! reported for it, the index's [`Snapshot`] and the scheme's live view
//! ([`detour_core::views`]), they give the status to report and the notices to publish.
//! [`StatusWriter`] applies them, checking the lease before every call.

use super::events::{EventSink, EventType, Notice};
use super::index::{MemberState, Snapshot, Sync};
use super::lease::Leadership;
use super::{Error, FIELD_MANAGER};
use crate::metrics::KubeMetrics;
use detour_core::decide::Decided;
use detour_core::docs::{
    API_VERSION, FailoverScheme, FailoverSchemeStatus, Kind, MemberCluster, MemberClusterStatus,
    ObjectRef, Problem, ProblemKind, SchemeState, TableLimitStatus, TargetStatus,
};
use detour_core::report::rfc3339;
use detour_core::tables::{TableSet, TableSize};
use detour_core::views::{SchemeView, routing_message, since, traffic_move};
use detour_filter::health::Health;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// After a failed write, try again this much later.
const RETRY: Duration = Duration::from_secs(5);

/// A status to report and what to tell about the change.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan<S> {
    pub status: S,
    pub notices: Vec<Notice>,
}

fn parse_time(text: &str) -> Option<SystemTime> {
    text.parse::<Timestamp>().ok().map(SystemTime::from)
}

/// `path: message; path: message` — what a status message says of problems.
pub fn problems_message(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| match &p.path {
            Some(path) => format!("{path}: {}", p.message),
            None => p.message.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Member clusters a scheme names, in order, without repeats.
fn referenced_clusters(scheme: &FailoverScheme) -> Vec<&str> {
    let spec = &scheme.spec;
    let mut out: Vec<&str> = vec![spec.primary.cluster.as_str()];
    for t in spec.failover_groups.iter().flat_map(|g| &g.priority_group) {
        if !out.contains(&t.cluster.as_str()) {
            out.push(&t.cluster);
        }
    }
    out
}

fn key_of(
    kind: Kind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> ObjectRef {
    ObjectRef {
        kind,
        namespace: meta.namespace.clone(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// The status of `scheme` now, and the notices of its change from `previous` (what was
/// last reported). `None` while the scheme's targets are not all checked yet and it had
/// a previous verdict: Unknown health would move the reported group back and forth.
pub fn plan_scheme(
    scheme: &FailoverScheme,
    previous: Option<&FailoverSchemeStatus>,
    snapshot: &Snapshot,
    view: Option<&SchemeView>,
    now: SystemTime,
) -> Option<Plan<FailoverSchemeStatus>> {
    let key = key_of(Kind::FailoverScheme, &scheme.metadata);
    let problems = snapshot
        .problems
        .get(&key)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let clusters = referenced_clusters(scheme);
    let member = |c: &str| snapshot.members.get(c);
    let mut status = FailoverSchemeStatus {
        observed_generation: scheme.metadata.generation,
        ..FailoverSchemeStatus::default()
    };
    if !problems.is_empty() {
        // Unknown services in a cluster not listed yet are a wait, not a mistake.
        let unlisted: Vec<&str> = clusters
            .iter()
            .copied()
            .filter(|c| member(c).is_some_and(|m| !m.ever_synced))
            .collect();
        let waiting = !unlisted.is_empty()
            && problems
                .iter()
                .all(|p| p.kind == ProblemKind::UnknownService);
        let failed = unlisted
            .iter()
            .find_map(|c| match member(c).map(|m| &m.sync) {
                Some(Sync::Failed(e)) => Some(format!("member cluster {c} cannot be reached: {e}")),
                _ => None,
            });
        (status.state, status.message) = match (waiting, failed) {
            (true, Some(why)) => (Some(SchemeState::Failed), Some(why)),
            (true, None) => (
                Some(SchemeState::Pending),
                Some(format!(
                    "waiting for the services of member cluster(s) {}",
                    unlisted.join(", ")
                )),
            ),
            (false, _) => (Some(SchemeState::Invalid), Some(problems_message(problems))),
        };
    } else if let Some(view) = view {
        // A provisional choice does not move a reported group.
        if previous.is_some_and(|p| p.active_group.is_some()) && !view.settled() {
            return None;
        }
        status.state = Some(SchemeState::Accepted);
        let mut message = routing_message(view);
        for c in &clusters {
            if let Some(MemberState {
                sync: Sync::Failed(e),
                ..
            }) = member(c)
            {
                message.push_str(&format!(
                    "; member cluster {c} cannot be watched ({e}): its last known services are used"
                ));
            }
        }
        status.message = Some(message);
        status.active_group = u32::try_from(view.active_group).ok();
        let before = |t: &detour_core::views::TargetView| {
            let p = previous?.targets.iter().find(|p| {
                p.cluster == t.target.cluster
                    && p.namespace == t.target.service.namespace
                    && p.name == t.target.service.name
            })?;
            let health = match p.health {
                detour_core::docs::TargetHealth::Healthy => Health::Healthy,
                detour_core::docs::TargetHealth::Unhealthy => Health::Unhealthy,
                detour_core::docs::TargetHealth::Unknown => Health::Unknown,
            };
            Some((health, parse_time(p.since.as_deref()?)?))
        };
        status.targets = view
            .targets
            .iter()
            .map(|t| TargetStatus {
                cluster: t.target.cluster.clone(),
                name: t.target.service.name.clone(),
                namespace: t.target.service.namespace.clone(),
                health: t.health.into(),
                since: Some(rfc3339(since(before(t), t, now))),
            })
            .collect();
    } else {
        status.state = Some(SchemeState::Pending);
        status.message = Some("not validated yet".into());
    }
    let notices = scheme_notices(previous, &status, view);
    Some(Plan { status, notices })
}

fn scheme_notices(
    previous: Option<&FailoverSchemeStatus>,
    status: &FailoverSchemeStatus,
    view: Option<&SchemeView>,
) -> Vec<Notice> {
    let mut notices = Vec::new();
    let was = previous.and_then(|p| p.state);
    if status.state == Some(SchemeState::Invalid)
        && (was != Some(SchemeState::Invalid)
            || previous.and_then(|p| p.message.as_ref()) != status.message.as_ref())
    {
        notices.push(Notice {
            type_: EventType::Warning,
            reason: "Invalid",
            action: "Validate",
            note: status.message.clone().unwrap_or_default(),
        });
    }
    if status.state == Some(SchemeState::Accepted) && was == Some(SchemeState::Invalid) {
        notices.push(Notice {
            type_: EventType::Normal,
            reason: "Accepted",
            action: "Validate",
            note: "valid again: detour serves this scheme".into(),
        });
    }
    // Moves are told relative to what was last reported: a new leader, or a restarted
    // controller, reports a move that happened while nobody wrote.
    let from = previous
        .and_then(|p| p.active_group)
        .and_then(|g| usize::try_from(g).ok())
        .unwrap_or(0);
    if status.active_group.is_some()
        && let Some(moved) = view.and_then(|view| traffic_move(view, from))
    {
        let (type_, reason) = if moved.failover {
            (EventType::Warning, "FailedOver")
        } else {
            (EventType::Normal, "FailedBack")
        };
        notices.push(Notice {
            type_,
            reason,
            action: "Route",
            note: moved.message,
        });
    }
    notices
}

/// The status of a member cluster now, and the notices of its change from `previous`;
/// `table` is the size of its newest table (none before the first tables are out).
pub fn plan_cluster(
    cluster: &MemberCluster,
    previous: Option<&MemberClusterStatus>,
    snapshot: &Snapshot,
    table: Option<&TableSize>,
) -> Plan<MemberClusterStatus> {
    let key = key_of(Kind::MemberCluster, &cluster.metadata);
    let name = key.name.as_str();
    let problems = snapshot
        .problems
        .get(&key)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let member = snapshot.members.get(name);
    let mut status = MemberClusterStatus {
        observed_generation: cluster.metadata.generation,
        services: snapshot
            .model
            .cluster(name)
            .and_then(|c| u32::try_from(c.services.len()).ok()),
        table: table.and_then(table_limit),
        ..MemberClusterStatus::default()
    };
    let ignored = if cluster.spec.services.is_empty() {
        ""
    } else {
        "; spec.services is ignored in Kubernetes, where services are discovered"
    };
    (status.state, status.message) = if !problems.is_empty() {
        (Some(SchemeState::Invalid), Some(problems_message(problems)))
    } else {
        match member.map(|m| (&m.sync, m.ever_synced)) {
            Some((Sync::Synced, _)) => (
                Some(SchemeState::Accepted),
                Some(format!("services listed and watched{ignored}")),
            ),
            Some((Sync::Failed(e), true)) => (
                Some(SchemeState::Failed),
                Some(format!(
                    "cannot watch the cluster ({e}); its last known services are used{ignored}"
                )),
            ),
            Some((Sync::Failed(e), false)) => (
                Some(SchemeState::Failed),
                Some(format!("cannot reach the cluster: {e}{ignored}")),
            ),
            Some((Sync::Waiting, _)) | None => (
                Some(SchemeState::Pending),
                Some(format!("connecting and listing services{ignored}")),
            ),
        }
    };
    let mut notices = Vec::new();
    let was_invalid = previous.and_then(|p| p.state) == Some(SchemeState::Invalid);
    if status.state == Some(SchemeState::Invalid)
        && (!was_invalid || previous.and_then(|p| p.message.as_ref()) != status.message.as_ref())
    {
        notices.push(Notice {
            type_: EventType::Warning,
            reason: "Invalid",
            action: "Validate",
            note: status.message.clone().unwrap_or_default(),
        });
    }
    notices.extend(table_notice(
        previous.and_then(|p| p.table.as_ref()),
        status.table.as_ref(),
    ));
    Plan { status, notices }
}

/// What the status says of a table past 80% of the filters' `maxTableBytes`.
fn table_limit(size: &TableSize) -> Option<TableLimitStatus> {
    let message = format!("the table is {}", size.limit_note("here")?);
    Some(TableLimitStatus {
        percent_of_limit: size.percent(),
        served: !size.over_limit(),
        message,
    })
}

/// An Event when the table crosses a line upwards: past 80% (TableNearLimit), over the
/// limit (TableRefused). Going back down is in the status only.
fn table_notice(
    previous: Option<&TableLimitStatus>,
    now: Option<&TableLimitStatus>,
) -> Option<Notice> {
    let now = now?;
    let reason = if !now.served && previous.is_none_or(|p| p.served) {
        "TableRefused"
    } else if now.served && previous.is_none() {
        "TableNearLimit"
    } else {
        return None;
    };
    Some(Notice {
        type_: EventType::Warning,
        reason,
        action: "PublishTable",
        note: now.message.clone(),
    })
}

/// Writes status and Events for every object whose report changed (leader only).
pub struct StatusWriter {
    client: Client,
    events: EventSink,
    leadership: Leadership,
    metrics: Arc<KubeMetrics>,
    /// What this replica last reported, by object uid: compared instead of the watched
    /// status, which may lag behind our own writes.
    schemes: HashMap<String, FailoverSchemeStatus>,
    clusters: HashMap<String, MemberClusterStatus>,
}

impl StatusWriter {
    pub fn new(
        client: Client,
        events: EventSink,
        leadership: Leadership,
        metrics: Arc<KubeMetrics>,
    ) -> StatusWriter {
        StatusWriter {
            client,
            events,
            leadership,
            metrics,
            schemes: HashMap::new(),
            clusters: HashMap::new(),
        }
    }

    /// Forgets what was written: after leading again, another leader may have written
    /// since, so the watched status is the truth.
    pub fn forget(&mut self) {
        self.schemes.clear();
        self.clusters.clear();
    }

    /// Reports every object of `snapshot`, with the views of `decided` (one decision,
    /// shared with the table and status APIs). Continues past an object's API error
    /// (returns the first); stops at once when the lease is lost.
    pub async fn sync(
        &mut self,
        snapshot: &Snapshot,
        decided: &Decided,
        tables: &TableSet,
    ) -> Result<(), Error> {
        let views: HashMap<&str, &SchemeView> = decided
            .decision
            .views
            .iter()
            .map(|v| (v.id.as_str(), v))
            .collect();
        let wall = decided.wall;
        let mut first_error = None;
        for scheme in &snapshot.schemes {
            let id = format!(
                "{}/{}",
                scheme.metadata.namespace.as_deref().unwrap_or_default(),
                scheme.metadata.name.as_deref().unwrap_or_default()
            );
            match self
                .sync_scheme(scheme, snapshot, views.get(id.as_str()).copied(), wall)
                .await
            {
                Ok(()) => {}
                Err(Error::NotLeader) => return Err(Error::NotLeader),
                Err(e) => {
                    self.metrics.kube_error("status", &e);
                    warn!(scheme = %id, error = %e, "cannot report status");
                    first_error.get_or_insert(e);
                }
            }
        }
        for cluster in &snapshot.clusters {
            let name = cluster.metadata.name.as_deref().unwrap_or_default();
            match self
                .sync_cluster(cluster, snapshot, tables.size(name))
                .await
            {
                Ok(()) => {}
                Err(Error::NotLeader) => return Err(Error::NotLeader),
                Err(e) => {
                    self.metrics.kube_error("status", &e);
                    warn!(cluster = name, error = %e, "cannot report status");
                    first_error.get_or_insert(e);
                }
            }
        }
        // Deleted objects are forgotten.
        let uid = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            m.uid.clone().unwrap_or_default()
        };
        let live: std::collections::HashSet<String> = snapshot
            .schemes
            .iter()
            .map(|s| uid(&s.metadata))
            .chain(snapshot.clusters.iter().map(|c| uid(&c.metadata)))
            .collect();
        self.schemes.retain(|k, _| live.contains(k));
        self.clusters.retain(|k, _| live.contains(k));
        first_error.map_or(Ok(()), Err)
    }

    async fn sync_scheme(
        &mut self,
        scheme: &FailoverScheme,
        snapshot: &Snapshot,
        view: Option<&SchemeView>,
        wall: SystemTime,
    ) -> Result<(), Error> {
        let uid = scheme.metadata.uid.clone().unwrap_or_default();
        let previous = self.schemes.get(&uid).or(scheme.status.as_ref()).cloned();
        let Some(plan) = plan_scheme(scheme, previous.as_ref(), snapshot, view, wall) else {
            return Ok(());
        };
        if previous.as_ref() != Some(&plan.status) {
            self.leadership.check()?;
            let api: Api<FailoverScheme> = Api::namespaced(
                self.client.clone(),
                scheme.metadata.namespace.as_deref().unwrap_or_default(),
            );
            let name = scheme.metadata.name.as_deref().unwrap_or_default();
            let patch = serde_json::json!({
                "apiVersion": API_VERSION,
                "kind": "FailoverScheme",
                "status": plan.status,
            });
            api.patch_status(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
            self.metrics.kube_write("failoverschemes/status");
            debug!(scheme = name, state = ?plan.status.state, active_group = ?plan.status.active_group, "status reported");
        }
        self.schemes.insert(uid, plan.status);
        self.publish(&scheme.object_ref(&()), &plan.notices).await
    }

    async fn sync_cluster(
        &mut self,
        cluster: &MemberCluster,
        snapshot: &Snapshot,
        table: Option<&TableSize>,
    ) -> Result<(), Error> {
        let uid = cluster.metadata.uid.clone().unwrap_or_default();
        let previous = self.clusters.get(&uid).or(cluster.status.as_ref()).cloned();
        let plan = plan_cluster(cluster, previous.as_ref(), snapshot, table);
        if previous.as_ref() != Some(&plan.status) {
            self.leadership.check()?;
            let api: Api<MemberCluster> = Api::all(self.client.clone());
            let name = cluster.metadata.name.as_deref().unwrap_or_default();
            let patch = serde_json::json!({
                "apiVersion": API_VERSION,
                "kind": "MemberCluster",
                "status": plan.status,
            });
            api.patch_status(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
            self.metrics.kube_write("memberclusters/status");
        }
        self.clusters.insert(uid, plan.status);
        self.publish(&cluster.object_ref(&()), &plan.notices).await
    }

    async fn publish(
        &self,
        regarding: &k8s_openapi::api::core::v1::ObjectReference,
        notices: &[Notice],
    ) -> Result<(), Error> {
        for notice in notices {
            self.leadership.check()?;
            self.events.publish(regarding, notice).await?;
            self.metrics.kube_write("events");
            info!(
                object = regarding.name.as_deref().unwrap_or_default(),
                reason = notice.reason,
                note = %notice.note,
                "event"
            );
        }
        Ok(())
    }
}

/// Reports status while this replica leads: whenever the index or the decision (new
/// health, a damping window ending) change, and again after a failed write. `tables`
/// (read, not waited on: the controller publishes a decision's tables before the
/// decision) give the member clusters' table sizes.
pub async fn run(
    mut writer: StatusWriter,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    mut decisions: watch::Receiver<Arc<Decided>>,
    tables: watch::Receiver<Arc<TableSet>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut leading = writer.leadership.subscribe();
    // Nothing is reported before everything was listed once (a half-listed world would
    // call valid schemes invalid); after that, a member cluster connecting later holds
    // up nobody else's status.
    let mut listed = false;
    loop {
        let mut retry = None;
        let snapshot = snapshots.borrow_and_update().clone();
        let decided = decisions.borrow_and_update().clone();
        listed |= snapshot.ready;
        // Only a decision made on this snapshot's model says anything of its schemes (a
        // scheme the decision task has not seen yet would read as not validated): wait
        // for the decision task to catch up, which it does within its build gap.
        let caught_up = *decided.model == snapshot.model;
        if writer.leadership.is_leader() && listed && caught_up {
            let tables = tables.borrow().clone();
            match writer.sync(&snapshot, &decided, &tables).await {
                Ok(()) | Err(Error::NotLeader) => {}
                Err(_) => retry = Some(RETRY),
            }
        }
        let retry = async {
            match retry {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = snapshots.changed() => if r.is_err() { return },
            r = decisions.changed() => if r.is_err() { return },
            r = leading.changed() => {
                if r.is_err() { return }
                writer.forget();
            }
            () = retry => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests;
