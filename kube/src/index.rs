//! The Kubernetes side of the index (pure): watch changes of FailoverSchemes,
//! MemberClusters, kubeconfig Secrets and every member cluster's Services and
//! EndpointSlices, turned into the documents a file would hold and validated by the same
//! [`Index`] — so the same documents give the same model, and the same tables.
//!
//! A MemberCluster becomes the document a file user would write for it: its spec with the
//! discovered services listed (only those some FailoverScheme names). Documents are fed in
//! a stable order (oldest first, then by name) so that every replica resolves a conflict
//! — two schemes for one primary — the same way, whatever order its watches delivered.

use super::discovery::ClusterServices;
use detour_core::docs::{
    Document, FailoverScheme, Kind, MemberCluster, Object, ObjectRef, Origin, Problem,
};
use detour_core::index::Index;
use detour_core::model::{Catalogue, Model, ServiceName};
use detour_core::validate::{Mode, Policy};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Source name in problems about Kubernetes objects.
pub const ORIGIN: &str = "kubernetes";

/// One change from a watch: relists arrive whole (see [`Relist`]).
#[derive(Debug, Clone)]
pub enum Change<K> {
    Apply(K),
    Delete(K),
    /// The complete current set, after a (re)list.
    Reset(Vec<K>),
}

/// Turns a watcher's events into [`Change`]s: the objects of a (re)list are held back
/// until it is complete, so a relist never shows a half-empty cluster for a moment.
#[derive(Debug)]
pub struct Relist<K> {
    listing: Option<Vec<K>>,
}

impl<K> Default for Relist<K> {
    fn default() -> Self {
        Relist { listing: None }
    }
}

impl<K> Relist<K> {
    pub fn feed(&mut self, event: watcher::Event<K>) -> Option<Change<K>> {
        match event {
            watcher::Event::Apply(k) => Some(Change::Apply(k)),
            watcher::Event::Delete(k) => Some(Change::Delete(k)),
            watcher::Event::Init => {
                self.listing = Some(Vec::new());
                None
            }
            watcher::Event::InitApply(k) => {
                self.listing.get_or_insert_with(Vec::new).push(k);
                None
            }
            watcher::Event::InitDone => {
                Some(Change::Reset(self.listing.take().unwrap_or_default()))
            }
        }
    }
}

/// How far a member cluster's discovery has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sync {
    /// Connecting, or listing for the first time.
    Waiting,
    /// Services and EndpointSlices are listed and watched.
    Synced,
    /// Cannot connect or watch; the services last seen (if any) keep serving.
    Failed(String),
}

/// What detour knows of one member cluster's API.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberState {
    pub sync: Sync,
    /// Listed at least once since its connection was set up: its services are real.
    pub ever_synced: bool,
    /// Services known in the cluster.
    pub services: usize,
}

#[derive(Debug, Default)]
struct Member {
    /// Which connection's events are current; older ones are dropped.
    epoch: u64,
    services: ClusterServices,
    services_listed: bool,
    slices_listed: bool,
    ever_synced: bool,
    failed: Option<String>,
}

impl Member {
    fn state(&self) -> MemberState {
        let sync = match &self.failed {
            Some(error) => Sync::Failed(error.clone()),
            None if self.services_listed && self.slices_listed => Sync::Synced,
            None => Sync::Waiting,
        };
        MemberState {
            sync,
            ever_synced: self.ever_synced,
            services: self.services.len(),
        }
    }
}

/// How to reach a member cluster's API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// The cluster the controller runs in (in-cluster config).
    Local,
    /// Through the kubeconfig in a Secret of the controller's namespace.
    Kubeconfig { secret: String, kubeconfig: String },
}

/// Everything the rest of the controller needs from one moment of the index.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every valid document (what the tables serve).
    pub model: Model,
    /// Problems by the object they are about.
    pub problems: BTreeMap<ObjectRef, Vec<Problem>>,
    pub schemes: Vec<Arc<FailoverScheme>>,
    pub clusters: Vec<Arc<MemberCluster>>,
    /// By member cluster name; a MemberCluster without an entry has not been connected.
    pub members: BTreeMap<String, MemberState>,
    /// Every discovered service of each connected member cluster, named by a scheme or
    /// not (the model holds only the named ones).
    pub catalogue: Catalogue,
    /// The CRDs are listed and every member cluster was listed once or failed: a replica
    /// serves complete tables from now on.
    pub ready: bool,
}

/// The index of Kubernetes objects.
#[derive(Debug)]
pub struct KubeIndex {
    schemes: BTreeMap<ObjectRef, Arc<FailoverScheme>>,
    clusters: BTreeMap<String, Arc<MemberCluster>>,
    secrets: BTreeMap<String, Secret>,
    members: BTreeMap<String, Member>,
    listed: BTreeSet<&'static str>,
    index: Index,
}

impl Default for KubeIndex {
    fn default() -> Self {
        KubeIndex::new()
    }
}

impl KubeIndex {
    pub fn new() -> KubeIndex {
        KubeIndex::with_policy(Policy::default())
    }

    /// An index whose schemes are validated under `policy`.
    pub fn with_policy(policy: Policy) -> KubeIndex {
        KubeIndex {
            schemes: BTreeMap::new(),
            clusters: BTreeMap::new(),
            secrets: BTreeMap::new(),
            members: BTreeMap::new(),
            listed: BTreeSet::new(),
            index: Index::with_policy(Mode::Kubernetes, policy),
        }
    }

    pub fn schemes(&mut self, change: Change<FailoverScheme>) {
        let key = |s: &FailoverScheme| ObjectRef::of(Kind::FailoverScheme, &s.metadata);
        match change {
            Change::Apply(s) => {
                self.schemes.insert(key(&s), Arc::new(s));
            }
            Change::Delete(s) => {
                self.schemes.remove(&key(&s));
            }
            Change::Reset(all) => {
                self.listed.insert("failoverschemes");
                self.schemes = all.into_iter().map(|s| (key(&s), Arc::new(s))).collect();
            }
        }
    }

    pub fn clusters(&mut self, change: Change<MemberCluster>) {
        let name = |c: &MemberCluster| c.metadata.name.clone().unwrap_or_default();
        match change {
            Change::Apply(c) => {
                self.clusters.insert(name(&c), Arc::new(c));
            }
            Change::Delete(c) => {
                self.clusters.remove(&name(&c));
            }
            Change::Reset(all) => {
                self.listed.insert("memberclusters");
                self.clusters = all.into_iter().map(|c| (name(&c), Arc::new(c))).collect();
            }
        }
        // A deleted cluster's services go with it.
        let clusters = &self.clusters;
        self.members.retain(|name, _| clusters.contains_key(name));
    }

    /// Kubeconfig Secrets of the controller's namespace.
    pub fn secrets(&mut self, change: Change<Secret>) {
        let name = |s: &Secret| s.metadata.name.clone().unwrap_or_default();
        match change {
            Change::Apply(s) => {
                self.secrets.insert(name(&s), s);
            }
            Change::Delete(s) => {
                self.secrets.remove(&name(&s));
            }
            Change::Reset(all) => {
                self.listed.insert("secrets");
                self.secrets = all.into_iter().map(|s| (name(&s), s)).collect();
            }
        }
    }

    /// A new connection to `cluster` starts: returns its epoch. Services already known
    /// stay until the new connection lists them again (fail static across reconnects).
    pub fn connect(&mut self, cluster: &str) -> u64 {
        let member = self.members.entry(cluster.to_string()).or_default();
        member.epoch += 1;
        member.services_listed = false;
        member.slices_listed = false;
        member.failed = None;
        member.epoch
    }

    /// The epoch of `cluster`'s current connection.
    pub fn epoch(&self, cluster: &str) -> Option<u64> {
        self.members.get(cluster).map(|m| m.epoch)
    }

    /// `cluster` cannot be reached (no usable kubeconfig, or its watches fail).
    pub fn member_failed(&mut self, cluster: &str, epoch: Option<u64>, error: String) {
        let member = self.members.entry(cluster.to_string()).or_default();
        if epoch.is_none_or(|e| e == member.epoch) {
            member.failed = Some(error);
        }
    }

    pub fn services(&mut self, cluster: &str, epoch: u64, change: Change<Service>) {
        let Some(member) = self.member(cluster, epoch) else {
            return;
        };
        match change {
            Change::Apply(s) => member.services.apply_service(s),
            Change::Delete(s) => member.services.delete_service(&s),
            Change::Reset(all) => {
                member.services.reset_services(all);
                member.services_listed = true;
            }
        }
        member.settle();
    }

    pub fn slices(&mut self, cluster: &str, epoch: u64, change: Change<EndpointSlice>) {
        let Some(member) = self.member(cluster, epoch) else {
            return;
        };
        match change {
            Change::Apply(s) => member.services.apply_slice(s),
            Change::Delete(s) => member.services.delete_slice(&s),
            Change::Reset(all) => {
                member.services.reset_slices(all);
                member.slices_listed = true;
            }
        }
        member.settle();
    }

    fn member(&mut self, cluster: &str, epoch: u64) -> Option<&mut Member> {
        self.members.get_mut(cluster).filter(|m| m.epoch == epoch)
    }

    /// How each MemberCluster's API is reached, or why it cannot be.
    pub fn connections(&self) -> BTreeMap<String, Result<Connection, String>> {
        self.clusters
            .iter()
            .map(|(name, c)| (name.clone(), self.connection(c)))
            .collect()
    }

    fn connection(&self, cluster: &MemberCluster) -> Result<Connection, String> {
        let Some(reference) = &cluster.spec.kubeconfig_secret else {
            return Ok(Connection::Local);
        };
        let Some(secret) = self.secrets.get(&reference.name) else {
            return Err(format!(
                "kubeconfig Secret {:?} not found in the controller's namespace (it needs the label {}=true)",
                reference.name,
                super::KUBECONFIG_LABEL
            ));
        };
        let key = reference.key();
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|s| s.clone().into_bytes())
            });
        let Some(bytes) = bytes else {
            return Err(format!(
                "kubeconfig Secret {:?} has no key {key:?}",
                reference.name
            ));
        };
        let kubeconfig = String::from_utf8(bytes).map_err(|_| {
            format!(
                "kubeconfig Secret {:?}: key {key:?} is not UTF-8",
                reference.name
            )
        })?;
        Ok(Connection::Kubeconfig {
            secret: reference.name.clone(),
            kubeconfig,
        })
    }

    /// Services some FailoverScheme names (as primary or target), by cluster.
    fn wanted(&self) -> BTreeSet<(String, ServiceName)> {
        let mut wanted = BTreeSet::new();
        for s in self.schemes.values() {
            let p = &s.spec.primary;
            wanted.insert((p.cluster.clone(), ServiceName::new(&p.namespace, &p.name)));
            for t in s
                .spec
                .failover_groups
                .iter()
                .flat_map(|g| &g.priority_group)
            {
                for svc in &t.services {
                    wanted.insert((
                        t.cluster.clone(),
                        ServiceName::new(&svc.namespace, &svc.name),
                    ));
                }
            }
        }
        wanted
    }

    /// The documents a file would hold for the current objects, oldest first.
    pub fn documents(&self) -> Vec<Document> {
        let wanted = self.wanted();
        let origin = Origin {
            source: ORIGIN.to_string(),
            document: None,
        };
        let mut clusters: Vec<&Arc<MemberCluster>> = self.clusters.values().collect();
        clusters.sort_by(|a, b| age(&a.metadata).cmp(&age(&b.metadata)));
        let mut schemes: Vec<&Arc<FailoverScheme>> = self.schemes.values().collect();
        schemes.sort_by(|a, b| age(&a.metadata).cmp(&age(&b.metadata)));

        let mut docs = Vec::new();
        for c in clusters {
            let name = c.metadata.name.clone().unwrap_or_default();
            let mut spec = c.spec.clone();
            spec.services = self
                .members
                .get(&name)
                .map(|m| {
                    m.services
                        .specs(|s| wanted.contains(&(name.clone(), s.clone())))
                })
                .unwrap_or_default();
            docs.push(Document {
                origin: origin.clone(),
                object: Object::MemberCluster { name, spec },
            });
        }
        for s in schemes {
            docs.push(Document {
                origin: origin.clone(),
                object: Object::FailoverScheme {
                    namespace: s.metadata.namespace.clone().unwrap_or_default(),
                    name: s.metadata.name.clone().unwrap_or_default(),
                    spec: Box::new(s.spec.clone()),
                },
            });
        }
        docs
    }

    /// Validates the current documents (through the shared [`Index`]) and reports.
    pub fn snapshot(&mut self) -> Snapshot {
        self.index.reset(self.documents());
        let (model, found) = self.index.partial_model();
        let mut problems: BTreeMap<ObjectRef, Vec<Problem>> = BTreeMap::new();
        let keys: BTreeSet<ObjectRef> = self
            .schemes
            .keys()
            .cloned()
            .chain(
                self.clusters
                    .values()
                    .map(|c| ObjectRef::of(Kind::MemberCluster, &c.metadata)),
            )
            .collect();
        for p in found {
            if let Some(key) = p.object.as_ref().and_then(|o| keys.get(o)) {
                problems.entry(key.clone()).or_default().push(p);
            }
        }
        let (members, catalogue): (BTreeMap<String, MemberState>, Catalogue) = self
            .members
            .iter()
            .filter(|(name, _)| self.clusters.contains_key(*name))
            .map(|(name, m)| {
                (
                    (name.clone(), m.state()),
                    (name.clone(), m.services.known()),
                )
            })
            .unzip();
        let listed = ["failoverschemes", "memberclusters", "secrets"]
            .iter()
            .all(|r| self.listed.contains(r));
        let members_settled = self.clusters.keys().all(|name| {
            members
                .get(name)
                .is_some_and(|m| m.ever_synced || matches!(m.sync, Sync::Failed(_)))
        });
        Snapshot {
            model,
            problems,
            catalogue,
            schemes: self.schemes.values().cloned().collect(),
            clusters: self.clusters.values().cloned().collect(),
            members,
            ready: listed && members_settled,
        }
    }
}

impl Member {
    /// After a change: a complete listing makes the cluster synced.
    fn settle(&mut self) {
        if self.services_listed && self.slices_listed {
            self.ever_synced = true;
            // Events arriving again mean the watch recovered.
            self.failed = None;
        }
    }
}

/// Sort key: creation time, then namespace and name (objects made in one second).
fn age(meta: &ObjectMeta) -> (Option<i64>, Option<&str>, Option<&str>) {
    (
        meta.creation_timestamp.as_ref().map(|t| t.0.as_second()),
        meta.namespace.as_deref(),
        meta.name.as_deref(),
    )
}

#[cfg(test)]
mod tests;
