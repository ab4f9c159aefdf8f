//! `serve --kubernetes`, in two task groups started apart: the source (watches → models,
//! as the file source does) and the leader-elected writers (the elector decides who
//! writes; the status writer and, given an issuer, the Secret writer write while this
//! replica leads).

use super::client;
use super::events::EventSink;
use super::index::Snapshot;
use super::issuer::CaIssuer;
use super::lease::{self, Elector, Leadership, LeaseApi, SystemClock, Timing};
use super::secrets::{self, SecretWriter};
use super::secrets::{Issuer, Member};
use super::source::{self, Outputs};
use super::status::{self, StatusWriter};
use crate::metrics::KubeMetrics;
use anyhow::Context;
use detour_core::decide::Decided;
use detour_core::model::{Catalogue, Model};
use detour_core::tables::TableSet;
use detour_core::validate::Policy;
use kube::Client;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{Instrument, info, info_span, warn};

#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// The controller's namespace: its Lease and the member clusters' kubeconfig Secrets.
    pub namespace: String,
    /// This replica's name in the Lease and in Events (the pod name).
    pub identity: String,
    pub lease_name: String,
    /// Namespace of the mTLS Secret in every member cluster.
    pub member_namespace: String,
    pub timing: Timing,
    /// A `detour certs init` directory: with the CA's key in it, the leader issues each
    /// member cluster's mTLS Secret.
    pub issuer: Option<PathBuf>,
    /// Lifetime of the certificates in the member clusters' Secrets.
    pub member_cert_lifetime: Duration,
    /// How often the CA's files in `issuer` are looked at for a change (a step of a
    /// change of CA).
    pub reload_interval: Duration,
    /// What FailoverSchemes may ask for (namespaces, bounds).
    pub policy: Policy,
}

/// The Kubernetes source, started: its watches feed the models (as the file source
/// does); what the leader-elected writers need is kept here for
/// [`KubeSource::start_writers`].
pub struct KubeSource {
    opts: KubeOptions,
    client: Client,
    issuer: Option<CaIssuer>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    members: watch::Receiver<BTreeMap<String, Member>>,
    metrics: Arc<KubeMetrics>,
}

impl KubeSource {
    /// Connects to the cluster detour runs in and starts the watches: every model goes
    /// to `models`, every member cluster's discovered services to `catalogue`, and
    /// `ready` becomes true once everything was listed (see [`Snapshot::ready`]). A CA
    /// that cannot be read stops the start before anything connects.
    pub async fn start(
        opts: KubeOptions,
        models: watch::Sender<Arc<Model>>,
        catalogue: watch::Sender<Arc<Catalogue>>,
        ready: watch::Sender<bool>,
        metrics: Arc<KubeMetrics>,
    ) -> anyhow::Result<KubeSource> {
        let issuer = match &opts.issuer {
            Some(dir) => CaIssuer::from_dir(dir, opts.member_cert_lifetime)?,
            None => None,
        };
        let client = client::local()
            .await
            .context("connecting to the cluster detour runs in")?;
        info!(
            namespace = %opts.namespace,
            identity = %opts.identity,
            lease = %opts.lease_name,
            "Kubernetes mode"
        );
        let (snapshots_tx, snapshots) = watch::channel(Arc::new(Snapshot::default()));
        let (members_tx, members) = watch::channel(BTreeMap::new());
        tokio::spawn(
            source::run(
                client.clone(),
                opts.namespace.clone(),
                opts.policy.clone(),
                Outputs {
                    models,
                    catalogue,
                    snapshots: snapshots_tx,
                    members: members_tx,
                },
                metrics.clone(),
            )
            .instrument(info_span!("kube_source")),
        );
        tokio::spawn(forward_ready(snapshots.clone(), ready));
        Ok(KubeSource {
            opts,
            client,
            issuer,
            snapshots,
            members,
            metrics,
        })
    }

    /// Starts the leader-elected task group: the election, and while this replica
    /// leads, the status writer (status and Events, from the controller's `decisions`
    /// and `tables`) and, given an issuer, the Secret writer. Returns the election task, which
    /// releases the Lease when `shutdown` fires (await it before exiting).
    pub fn start_writers(
        self,
        decisions: watch::Receiver<Arc<Decided>>,
        tables: watch::Receiver<Arc<TableSet>>,
        shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let KubeSource {
            opts,
            client,
            issuer,
            snapshots,
            members,
            metrics,
        } = self;
        let leadership = Leadership::new(Arc::new(SystemClock));
        let election = tokio::spawn(
            lease::run(
                Elector::new(&opts.identity, opts.timing),
                LeaseApi::new(client.clone(), &opts.namespace, &opts.lease_name),
                leadership.clone(),
                shutdown.clone(),
                metrics.clone(),
            )
            .instrument(info_span!("leader_election", identity = %opts.identity)),
        );
        let writer = StatusWriter::new(
            client.clone(),
            EventSink::new(client.clone(), &opts.identity),
            leadership.clone(),
            metrics.clone(),
        );
        tokio::spawn(
            status::run(writer, snapshots, decisions, tables, shutdown.clone())
                .instrument(info_span!("status")),
        );
        match issuer {
            Some(issuer) => {
                info!(namespace = %opts.member_namespace, "issuing member clusters' mTLS Secrets");
                let (issuers_tx, issuers) = watch::channel(Arc::new(issuer) as Arc<dyn Issuer>);
                if let Some(dir) = opts.issuer.clone() {
                    tokio::spawn(
                        reread_ca(
                            dir,
                            opts.member_cert_lifetime,
                            opts.reload_interval,
                            issuers_tx,
                            shutdown.clone(),
                        )
                        .instrument(info_span!("ca")),
                    );
                }
                let writer =
                    SecretWriter::watching(issuers, &opts.member_namespace, leadership, metrics);
                tokio::spawn(
                    secrets::run(writer, members, shutdown).instrument(info_span!("secrets")),
                );
            }
            None => info!(
                "no CA key (--certs DIR with ca.key): member clusters' mTLS Secrets are not written"
            ),
        }
        election
    }
}

/// Reads the CA of `dir` again whenever its files change (each step of `certs init
/// --ca-change` changes them), and hands the new issuer on. A CA that cannot be read
/// is logged and the last good one keeps issuing.
async fn reread_ca(
    dir: PathBuf,
    lifetime: Duration,
    every: Duration,
    issuers: watch::Sender<Arc<dyn Issuer>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut stamp = CaIssuer::dir_stamp(&dir);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let now = CaIssuer::dir_stamp(&dir);
        if now == stamp {
            continue;
        }
        // Files half written (a Secret volume is swapped at once, a directory by hand
        // is not) change again when done, and are read again then.
        stamp = now;
        match CaIssuer::from_dir(&dir, lifetime) {
            Ok(Some(issuer)) => {
                info!(dir = %dir.display(), "read the CA again");
                issuers.send_replace(Arc::new(issuer));
            }
            Ok(None) => {
                warn!(dir = %dir.display(), "the CA key is gone: the last CA read keeps issuing");
            }
            Err(e) => warn!(error = %e, "cannot read the CA: the last one keeps issuing"),
        }
    }
}

async fn forward_ready(mut snapshots: watch::Receiver<Arc<Snapshot>>, ready: watch::Sender<bool>) {
    loop {
        if snapshots.borrow_and_update().ready {
            ready.send_replace(true);
            info!("every resource and member cluster listed");
            return;
        }
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}
