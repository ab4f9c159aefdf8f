//! The Kubernetes source: watches (kube-runtime watchers with back-off) of the CRDs and
//! the kubeconfig Secrets in the management cluster, and of Services and EndpointSlices
//! in every member cluster, pumped into one [`KubeIndex`] by one task.
//!
//! After each batch of events it publishes the model (for the tables, exactly as the file
//! source does), the [`Snapshot`] (for status), and the member clusters' clients with
//! their gateways (for the mTLS Secrets). A member cluster's watches restart when its connection changes (its
//! kubeconfig Secret was edited), and stop when its MemberCluster goes.

use super::client;
use super::discovery::SERVICE_NAME_LABEL;
use super::index::{Change, Connection, KubeIndex, Relist, Snapshot, Sync};
use super::secrets::Member;
use crate::metrics::{ClusterLabels, KubeMetrics};
use detour_core::docs::{FailoverScheme, MemberCluster};
use detour_core::model::Host;
use detour_core::model::{Catalogue, Model};
use detour_core::validate::Policy;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, error, info, info_span, warn};

/// One thing a watch saw.
pub enum Input {
    Schemes(Change<FailoverScheme>),
    Clusters(Change<MemberCluster>),
    Secrets(Change<Secret>),
    Connected {
        cluster: String,
        epoch: u64,
        client: Client,
    },
    Services {
        cluster: String,
        epoch: u64,
        change: Change<Service>,
    },
    Slices {
        cluster: String,
        epoch: u64,
        change: Change<EndpointSlice>,
    },
    MemberFailed {
        cluster: String,
        epoch: u64,
        error: String,
    },
}

/// What the source publishes.
pub struct Outputs {
    pub models: watch::Sender<Arc<Model>>,
    /// Every discovered service of each member cluster, for the status API.
    pub catalogue: watch::Sender<Arc<Catalogue>>,
    pub snapshots: watch::Sender<Arc<Snapshot>>,
    /// Connected member clusters whose MemberCluster is valid.
    pub members: watch::Sender<BTreeMap<String, Member>>,
}

/// A member cluster's running watches.
struct Running {
    connection: Result<Connection, String>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

struct Source {
    index: KubeIndex,
    local: Client,
    running: BTreeMap<String, Running>,
    clients: BTreeMap<String, Client>,
    clients_changed: bool,
    tx: mpsc::Sender<Input>,
    metrics: Arc<KubeMetrics>,
    reported: BTreeSet<String>,
}

/// Runs the source until every watch ends (never, in practice).
pub async fn run(
    client: Client,
    namespace: String,
    policy: Policy,
    outputs: Outputs,
    metrics: Arc<KubeMetrics>,
) {
    let (tx, mut rx) = mpsc::channel(256);
    // The management cluster's watches; aborted when this task ends.
    let tasks = [
        spawn_watch(
            Api::<FailoverScheme>::all(client.clone()),
            watcher::Config::default(),
            tx.clone(),
            ("failoverschemes", String::new()),
            metrics.clone(),
            Input::Schemes,
        ),
        spawn_watch(
            Api::<MemberCluster>::all(client.clone()),
            watcher::Config::default(),
            tx.clone(),
            ("memberclusters", String::new()),
            metrics.clone(),
            Input::Clusters,
        ),
        spawn_watch(
            Api::<Secret>::namespaced(client.clone(), &namespace),
            watcher::Config::default().labels(&format!("{}=true", super::KUBECONFIG_LABEL)),
            tx.clone(),
            ("secrets", String::new()),
            metrics.clone(),
            Input::Secrets,
        ),
    ];
    let _abort = AbortOnDrop(tasks.into());
    let mut source = Source {
        index: KubeIndex::with_policy(policy),
        local: client,
        running: BTreeMap::new(),
        clients: BTreeMap::new(),
        clients_changed: false,
        tx,
        metrics,
        reported: BTreeSet::new(),
    };
    let mut published: BTreeMap<String, Host> = BTreeMap::new();
    while let Some(input) = rx.recv().await {
        source.apply(input);
        // Take whatever else is queued: one validation per batch, not per event.
        while let Ok(more) = rx.try_recv() {
            source.apply(more);
        }
        source.reconcile_members();
        let snapshot = source.index.snapshot();
        source.report(&snapshot);
        if send_if_changed(&outputs.models, &snapshot.model) {
            info!(
                clusters = snapshot.model.clusters.len(),
                schemes = snapshot.model.schemes.len(),
                "configuration from Kubernetes"
            );
        }
        // Endpoints are not in it: only a Service added, removed or changed is news.
        send_if_changed(&outputs.catalogue, &snapshot.catalogue);
        // Published when a client or a gateway changed.
        let gateways: BTreeMap<String, Host> = source
            .clients
            .keys()
            .filter_map(|c| Some((c.clone(), snapshot.model.cluster(c)?.gateway.host.clone())))
            .collect();
        if std::mem::take(&mut source.clients_changed) || gateways != published {
            let members = gateways
                .iter()
                .filter_map(|(c, gateway)| {
                    let client = source.clients.get(c)?.clone();
                    Some((
                        c.clone(),
                        Member {
                            gateway: gateway.clone(),
                            client,
                        },
                    ))
                })
                .collect();
            outputs.members.send_replace(members);
            published = gateways;
        }
        outputs.snapshots.send_replace(Arc::new(snapshot));
    }
}

/// Publishes `value` when it differs from what `tx` holds; returns whether it did.
fn send_if_changed<T: PartialEq + Clone>(tx: &watch::Sender<Arc<T>>, value: &T) -> bool {
    tx.send_if_modified(|current| {
        let changed = **current != *value;
        if changed {
            *current = Arc::new(value.clone());
        }
        changed
    })
}

impl Source {
    fn apply(&mut self, input: Input) {
        match input {
            Input::Schemes(c) => self.index.schemes(c),
            Input::Clusters(c) => self.index.clusters(c),
            Input::Secrets(c) => self.index.secrets(c),
            Input::Services {
                cluster,
                epoch,
                change,
            } => self.index.services(&cluster, epoch, change),
            Input::Slices {
                cluster,
                epoch,
                change,
            } => self.index.slices(&cluster, epoch, change),
            Input::MemberFailed {
                cluster,
                epoch,
                error,
            } => self.index.member_failed(&cluster, Some(epoch), error),
            Input::Connected {
                cluster,
                epoch,
                client,
            } => {
                if self.index.epoch(&cluster) == Some(epoch) {
                    self.clients.insert(cluster, client);
                    self.clients_changed = true;
                }
            }
        }
    }

    /// Starts, restarts and stops member clusters' watches to match the MemberClusters.
    fn reconcile_members(&mut self) {
        let wanted = self.index.connections();
        self.running.retain(|name, _| wanted.contains_key(name));
        let before = self.clients.len();
        self.clients.retain(|name, _| wanted.contains_key(name));
        self.clients_changed |= before != self.clients.len();
        for (cluster, connection) in wanted {
            if self
                .running
                .get(&cluster)
                .is_some_and(|r| r.connection == connection)
            {
                continue;
            }
            self.running.remove(&cluster); // aborts its watches
            if self.clients.remove(&cluster).is_some() {
                self.clients_changed = true;
            }
            let task = match &connection {
                Ok(c) => {
                    let epoch = self.index.connect(&cluster);
                    info!(%cluster, via = %describe(c), "watching the member cluster's services");
                    let span = info_span!("member_cluster", %cluster);
                    Some(tokio::spawn(
                        member(
                            cluster.clone(),
                            epoch,
                            c.clone(),
                            self.local.clone(),
                            self.tx.clone(),
                            self.metrics.clone(),
                        )
                        .instrument(span),
                    ))
                }
                Err(e) => {
                    warn!(%cluster, error = %e, "cannot connect to the member cluster");
                    self.index.member_failed(&cluster, None, e.clone());
                    None
                }
            };
            self.running.insert(cluster, Running { connection, task });
        }
    }

    /// Logs problems once each, and keeps the member-cluster gauges current.
    fn report(&mut self, snapshot: &Snapshot) {
        // Until every member cluster was listed once, a scheme naming a service of one
        // not listed yet reads as refused: that is a wait, not an error to log at every
        // start.
        if snapshot.ready {
            let now: BTreeSet<String> = snapshot
                .problems
                .values()
                .flatten()
                .map(ToString::to_string)
                .collect();
            for p in now.difference(&self.reported) {
                error!(problem = %p, "document refused");
            }
            self.reported = now;
        }
        for (cluster, state) in &snapshot.members {
            self.metrics
                .kube_member_synced
                .get_or_create(&ClusterLabels {
                    cluster: cluster.clone(),
                })
                .set(i64::from(state.sync == Sync::Synced));
        }
    }
}

fn describe(c: &Connection) -> String {
    match c {
        Connection::Local => "in-cluster config".to_string(),
        Connection::Kubeconfig { secret, .. } => format!("kubeconfig Secret {secret}"),
    }
}

/// One member cluster: connect, then watch its Services and EndpointSlices until aborted.
async fn member(
    cluster: String,
    epoch: u64,
    connection: Connection,
    local: Client,
    tx: mpsc::Sender<Input>,
    metrics: Arc<KubeMetrics>,
) {
    let client = match connection {
        Connection::Local => local,
        Connection::Kubeconfig { kubeconfig, .. } => {
            match client::from_kubeconfig(&cluster, &kubeconfig).await {
                Ok(c) => c,
                Err(e) => {
                    metrics.kube_error("discovery", &e);
                    let _ = tx
                        .send(Input::MemberFailed {
                            cluster,
                            epoch,
                            error: e.to_string(),
                        })
                        .await;
                    return;
                }
            }
        }
    };
    let connected = Input::Connected {
        cluster: cluster.clone(),
        epoch,
        client: client.clone(),
    };
    if tx.send(connected).await.is_err() {
        return;
    }
    let failed = |cluster: String| {
        move |error: String| {
            Some(Input::MemberFailed {
                cluster: cluster.clone(),
                epoch,
                error,
            })
        }
    };
    let services = {
        let name = cluster.clone();
        watch(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
            &tx,
            ("services", cluster.clone()),
            &metrics,
            move |change| Input::Services {
                cluster: name.clone(),
                epoch,
                change,
            },
            failed(cluster.clone()),
        )
    };
    let slices = {
        let name = cluster.clone();
        watch(
            Api::<EndpointSlice>::all(client),
            // Only slices that belong to a Service.
            watcher::Config::default().labels(SERVICE_NAME_LABEL),
            &tx,
            ("endpointslices", cluster.clone()),
            &metrics,
            move |change| Input::Slices {
                cluster: name.clone(),
                epoch,
                change,
            },
            failed(cluster.clone()),
        )
    };
    tokio::join!(services, slices);
}

struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    tx: mpsc::Sender<Input>,
    labels: (&'static str, String),
    metrics: Arc<KubeMetrics>,
    wrap: fn(Change<K>) -> Input,
) -> JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let span = info_span!("watch", resource = labels.0);
    tokio::spawn(
        async move {
            watch(api, config, &tx, labels, &metrics, wrap, |_| None).await;
        }
        .instrument(span),
    )
}

/// Feeds `api`'s watch into `tx` until the receiver goes. Errors are retried with
/// kube-runtime's back-off; `on_error` may turn one into an input (a member cluster
/// becoming unreachable).
async fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    tx: &mpsc::Sender<Input>,
    (resource, cluster): (&'static str, String),
    metrics: &KubeMetrics,
    wrap: impl Fn(Change<K>) -> Input,
    on_error: impl Fn(String) -> Option<Input>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let mut relist = Relist::default();
    let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
    while let Some(event) = stream.next().await {
        let input = match event {
            Ok(event) => {
                let kind = match &event {
                    watcher::Event::Apply(_) => "apply",
                    watcher::Event::Delete(_) => "delete",
                    _ => "init",
                };
                metrics.watch_event(resource, &cluster, kind);
                relist.feed(event).map(&wrap)
            }
            Err(e) => {
                metrics.watch_event(resource, &cluster, "error");
                warn!(resource, cluster = %cluster, error = %e, "watch failed; retrying with back-off");
                on_error(e.to_string())
            }
        };
        if let Some(input) = input
            && tx.send(input).await.is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The source's wiring: real kube-runtime watchers against a fake API server that
    //! answers lists by path and holds watches open.
    use super::*;
    use crate::testing::{example, mock_client};
    use serde_json::{Value, json};
    use std::time::Duration;

    fn list(kind: &str, items: Vec<Value>) -> Value {
        json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "10"}, "items": items})
    }

    #[tokio::test]
    async fn lists_become_the_model_and_member_clusters_connect() {
        let ex = example();
        let schemes: Vec<Value> = ex.schemes.iter().map(to_json).collect();
        let clusters: Vec<Value> = ex.clusters.iter().map(to_json).collect();
        // Every member cluster is "local" here, so all three list the same Services: east's.
        let (services, slices) = ex.discovered["east"].clone();
        let services: Vec<Value> = services.iter().map(to_json).collect();
        let slices: Vec<Value> = slices.iter().map(to_json).collect();

        let (client, mut api) = mock_client();
        let queries = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = queries.clone();
        let server = tokio::spawn(async move {
            let mut parked = Vec::new(); // watches: held open, never answered
            loop {
                let call = api.next_any().await;
                let Some(call) = call else { return };
                seen.lock().unwrap().push(call.uri.clone());
                let (path, query) = call.uri.split_once('?').unwrap_or((&call.uri, ""));
                if query.contains("watch=true") {
                    parked.push(call);
                    continue;
                }
                let body = match path {
                    "/apis/detour.dev/v1alpha1/failoverschemes" => {
                        list("FailoverSchemeList", schemes.clone())
                    }
                    "/apis/detour.dev/v1alpha1/memberclusters" => {
                        list("MemberClusterList", clusters.clone())
                    }
                    "/api/v1/namespaces/detour-system/secrets" => list("SecretList", vec![]),
                    "/api/v1/services" => list("ServiceList", services.clone()),
                    "/apis/discovery.k8s.io/v1/endpointslices" => {
                        list("EndpointSliceList", slices.clone())
                    }
                    other => panic!("unexpected call to {other}"),
                };
                call.reply(200, body);
            }
        });

        let (models_tx, mut models) = watch::channel(Arc::new(Model::default()));
        let (snapshots_tx, mut snapshots) = watch::channel(Arc::new(Snapshot::default()));
        let (members_tx, members) = watch::channel(BTreeMap::new());
        let source = tokio::spawn(run(
            client,
            "detour-system".into(),
            Policy::default(),
            Outputs {
                models: models_tx,
                catalogue: watch::channel(Arc::new(Catalogue::new())).0,
                snapshots: snapshots_tx,
                members: members_tx,
            },
            Arc::new(KubeMetrics::new()),
        ));
        tokio::time::timeout(Duration::from_secs(10), snapshots.wait_for(|s| s.ready))
            .await
            .expect("ready in time")
            .unwrap();
        let model = models.borrow_and_update().clone();
        let text = detour_core::testing::EXAMPLE
            .replace("127.0.2.10:8080", "127.0.1.10:8080")
            .replace("127.0.3.10:8080", "127.0.1.10:8080");
        let (docs, _) = detour_core::docs::load::parse_file("f.yaml", &text);
        assert_eq!(*model, detour_core::validate::build_model(&docs).unwrap());
        assert_eq!(
            members.borrow().len(),
            3,
            "each member cluster's client is published"
        );

        let queries = queries.lock().unwrap().clone();
        assert!(
            queries.iter().any(
                |q| q.starts_with("/api/v1/namespaces/detour-system/secrets?")
                    && q.contains("labelSelector=detour.dev%2Fkubeconfig%3Dtrue")
            ),
            "only labelled Secrets are watched: {queries:#?}"
        );
        assert!(
            queries.iter().any(
                |q| q.starts_with("/apis/discovery.k8s.io/v1/endpointslices?")
                    && q.contains("labelSelector=kubernetes.io%2Fservice-name")
            ),
            "only Services' slices are watched: {queries:#?}"
        );
        source.abort();
        server.abort();
    }

    fn to_json<T: serde::Serialize>(v: &T) -> Value {
        serde_json::to_value(v).unwrap()
    }
}
