//! `detour serve`: wires the parts together in three tasks: the source (files, or
//! Kubernetes watches: either feeds the index and publishes each model), the tables task
//! (which keeps the health checkers in line with the model and rebuilds the tables), and
//! the HTTP server(s). In Kubernetes mode the leader also writes status, Events and
//! Secrets ([`detour_kube::run`]).
//!
//! The tables task makes one decision per change ([`detour_core::decide`]): it publishes
//! its tables, and the status API's task ([`crate::live`]) and the Kubernetes status
//! writer report its views.
//!
//! Listeners: without TLS, `--listen` serves the table API and the operational
//! endpoints, unless `--ops-listen` gives the latter their own. With TLS, `--listen`
//! serves only the table API, over mTLS, and `--ops-listen` (then required) serves
//! `/healthz`, `/readyz`, `/metrics`, the status API and `/ui/` in plain HTTP. Certificates (server and probe)
//! are read at start (an unusable file stops the start, naming it) and reloaded when
//! they change on disk.

use crate::client::Connections;
use crate::health::probe::Prober;
use crate::health::{Checker, HealthBoard};
use crate::live::{self, Feeds, Versions};
use crate::metrics::{ClusterLabels, Metrics, VersionLabels};
use crate::server::{self, Access, AppState};
use crate::source::files::FileSource;
use crate::tls::config::{TlsFiles, server_config};
use crate::tls::reload::load_and_watch;
use crate::tls::server::TlsListener;
use anyhow::Context;
use detour_core::decide::Decided;
use detour_core::health::HealthMap;
use detour_core::model::{Model, ProbeSpec};
use detour_core::status::events::EventLog;
use detour_core::status::tracker::Tracker;
use detour_core::tables::{PublishedTable, TableSet};
use detour_kube::run::{KubeOptions, Wiring};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{Instrument, info, info_span};

/// Where the documents come from.
pub enum Source {
    /// A directory of YAML files, polled every `reload_interval`.
    Files { config: PathBuf },
    /// CRDs and member clusters' Services, watched.
    Kubernetes(KubeOptions),
}

pub struct ServeOptions {
    pub source: Source,
    pub listen: SocketAddr,
    /// `/healthz`, `/readyz` and `/metrics` on their own plain listener.
    pub ops_listen: Option<SocketAddr>,
    /// Serve the table API over mTLS: the server certificate, and the CA of clients.
    pub tls: Option<TlsFiles>,
    /// Probe the gateways over mTLS: the probe's client certificate, and the CA of the
    /// gateways.
    pub probe_tls: Option<TlsFiles>,
    pub reload_interval: Duration,
    pub max_wait: Duration,
}

/// How long shutdown waits for the Lease to be released.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    if opts.tls.is_some() && opts.ops_listen.is_none() {
        anyhow::bail!(
            "with TLS, /healthz, /readyz and /metrics need a plain listener of their own: add --ops-listen ADDR:PORT"
        );
    }
    // Certificates first: a bad file stops the start before anything listens.
    let server_tls = match &opts.tls {
        Some(files) => {
            let files = files.clone();
            Some(load_and_watch(
                "table API server certificate",
                files.all(),
                opts.reload_interval,
                move || server_config(&files),
            )?)
        }
        None => None,
    };
    let prober = match &opts.probe_tls {
        Some(files) => {
            let files = files.clone();
            Prober::tls_watched(load_and_watch(
                "health probe client certificate",
                files.all(),
                opts.reload_interval,
                move || crate::tls::client::mtls_client(&files, Connections::Reused),
            )?)
        }
        None => Prober::new(),
    };
    let metrics = Arc::new(Metrics::new());
    let board = HealthBoard::new();
    let (models_tx, models) = watch::channel(Arc::new(Model::default()));
    let (source_ready_tx, source_ready) = watch::channel(false);
    let (tables_tx, tables_rx) = watch::channel(Arc::new(TableSet::default()));
    let (decisions_tx, decisions_rx) = watch::channel(Arc::new(Decided::new(
        Arc::new(Model::default()),
        Arc::new(HealthMap::new()),
        Instant::now(),
        SystemTime::now(),
    )));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (config_tx, config_rx) = watch::channel(None);
    let mut election = None;
    let source_kind = match &opts.source {
        Source::Files { .. } => "files",
        Source::Kubernetes(_) => "kubernetes",
    };
    match opts.source {
        Source::Files { config } => {
            let mut source =
                FileSource::new(config.clone(), metrics.clone()).with_reports(config_tx);
            let model = source.load().map_err(|problems| {
                anyhow::anyhow!(
                    "{}\nthe configuration in {} is invalid ({} problem(s))",
                    detour_core::docs::Problems(problems.clone()),
                    config.display(),
                    problems.len()
                )
            })?;
            info!(
                config = %config.display(),
                clusters = model.clusters.len(),
                schemes = model.schemes.len(),
                "configuration loaded"
            );
            models_tx.send_replace(Arc::new(model));
            source_ready_tx.send_replace(true);
            tokio::spawn(
                source
                    .watch(models_tx, opts.reload_interval)
                    .instrument(info_span!("file_source", dir = %config.display())),
            );
        }
        Source::Kubernetes(kube) => {
            let wiring = Wiring {
                models: models_tx,
                source_ready: source_ready_tx,
                decisions: decisions_rx.clone(),
                shutdown: shutdown_rx.clone(),
            };
            election = Some(
                detour_kube::run::start(kube, wiring, Arc::new(metrics.kube.clone()))
                    .await
                    .context("starting the Kubernetes source")?,
            );
        }
    }

    // The first tables exist before the listener does: every member cluster can be
    // answered from the first request on (all targets Unknown until checked).
    let first = Decided::new(
        models.borrow().clone(),
        Arc::new(HealthMap::new()),
        Instant::now(),
        SystemTime::now(),
    );
    publish(&tables_tx, first.decision.tables.clone(), &metrics);
    decisions_tx.send_replace(Arc::new(first));

    let ready = Arc::new(AtomicBool::new(false));
    let mut versions = Versions::new(SystemTime::now());
    let (status_tx, status_rx) = live::channel(&mut versions, source_kind);
    tokio::spawn(
        live::run(
            Tracker::new(source_kind, EventLog::default()),
            Feeds {
                decisions: decisions_rx,
                tables: tables_rx.clone(),
                config: config_rx,
                ready: ready.clone(),
            },
            versions,
            status_tx,
        )
        .instrument(info_span!("status_api")),
    );
    let checker = Checker::new(board.clone(), prober, metrics.clone());
    tokio::spawn(
        run_tables(
            models,
            checker,
            board.subscribe(),
            Outputs {
                tables: tables_tx,
                decisions: decisions_tx,
            },
            Readiness {
                ready: ready.clone(),
                source: source_ready,
            },
            metrics.clone(),
        )
        .instrument(info_span!("tables")),
    );

    let state = AppState {
        tables: tables_rx,
        status: status_rx,
        ready,
        metrics: metrics.clone(),
        shutdown: shutdown_rx.clone(),
        max_wait: opts.max_wait,
        access: if server_tls.is_some() {
            Access::ByCertificate
        } else {
            Access::Open
        },
    };
    let listener = bind(opts.listen).await?;
    let address = listener.local_addr()?;
    let ops = match opts.ops_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let stopped = {
        let rx = shutdown_rx;
        move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        }
    };
    let mut api = match (server_tls, &ops) {
        (Some(config), _) => {
            info!(%address, "serving the table API over mTLS");
            let listener = TlsListener::new(listener, config, metrics)?;
            tokio::spawn(server::serve_tls(
                listener,
                server::table_router(state.clone()),
                stopped(),
            ))
        }
        (None, Some(_)) => {
            info!(%address, "serving the table API");
            tokio::spawn(server::serve(
                listener,
                server::table_router(state.clone()),
                stopped(),
            ))
        }
        (None, None) => {
            info!(%address, "serving the table API, /healthz, /readyz, /metrics, /v1/status and /ui/");
            tokio::spawn(server::serve(
                listener,
                server::router(state.clone()),
                stopped(),
            ))
        }
    };
    let ops = match ops {
        Some(listener) => {
            let address = listener.local_addr()?;
            info!(%address, "serving /healthz, /readyz, /metrics, /v1/status and /ui/");
            Some(tokio::spawn(server::serve(
                listener,
                server::ops_router(state),
                stopped(),
            )))
        }
        None => None,
    };
    let served = tokio::select! {
        () = shutdown_signal() => {
            info!("shutting down");
            let _ = shutdown_tx.send(true);
            wait_for(&mut api).await
        }
        // A server that stops by itself has failed: stop the other one too.
        done = wait_for(&mut api) => {
            let _ = shutdown_tx.send(true);
            done
        }
    };
    // The election task releases the Lease on shutdown; give it a moment to.
    if let Some(election) = election {
        let _ = tokio::time::timeout(RELEASE_TIMEOUT, election).await;
    }
    served.context("serving the table API")?;
    if let Some(mut ops) = ops {
        wait_for(&mut ops)
            .await
            .context("serving /healthz, /readyz and /metrics")?;
    }
    Ok(())
}

/// Where each decision goes: its tables (versioned, for the table API) and the whole
/// decision (status API, Kubernetes status and Events).
struct Outputs {
    tables: watch::Sender<Arc<TableSet>>,
    decisions: watch::Sender<Arc<Decided>>,
}

/// Ready once the source has listed everything and every target was checked once.
struct Readiness {
    ready: Arc<AtomicBool>,
    source: watch::Receiver<bool>,
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

async fn wait_for(task: &mut tokio::task::JoinHandle<std::io::Result<()>>) -> std::io::Result<()> {
    match task.await {
        Ok(result) => result,
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

/// Shortest time between two table builds: under a burst of health changes, builds of
/// every cluster's table back to back would take the CPU the checks need, and make
/// them time out (more changes). A change waits at most this long to be published.
const MIN_BUILD_GAP: Duration = Duration::from_millis(100);

/// Keeps one checker per probe spec of the current model, and rebuilds the tables
/// whenever the model or a target's health changes, or a failback damping window ends;
/// publishes those whose content changed. Checkers are reconciled here, just before the
/// build, so a new model never meets a board that does not know its targets yet.
async fn run_tables(
    mut models: watch::Receiver<Arc<Model>>,
    mut checker: Checker,
    mut health: watch::Receiver<HealthMap>,
    outputs: Outputs,
    mut readiness: Readiness,
    metrics: Arc<Metrics>,
) {
    let ready = readiness.ready.clone();
    // The file source sets its readiness once and goes; a closed channel is final.
    let mut source_open = true;
    let mut reconciled: Option<(Arc<Model>, BTreeSet<ProbeSpec>)> = None;
    let mut last_build: Option<tokio::time::Instant> = None;
    loop {
        // Changes that come in a burst (every target's first verdict at start, a
        // cluster going down) are built together, at most one build per
        // MIN_BUILD_GAP; a lone change is built at once.
        if let Some(last) = last_build {
            tokio::time::sleep_until(last + MIN_BUILD_GAP).await;
        }
        last_build = Some(tokio::time::Instant::now());
        let model = models.borrow_and_update().clone();
        if !reconciled
            .as_ref()
            .is_some_and(|(m, _)| Arc::ptr_eq(m, &model))
        {
            let specs = model.probe_specs();
            checker.reconcile(&specs);
            reconciled = Some((model.clone(), specs));
        }
        // A copy, so that the build does not hold the board: every checker that
        // records a result needs it, and would wait (blocking its worker thread) for
        // as long as a build of thousands of schemes takes.
        let board = health.borrow_and_update().clone();
        if !ready.load(Ordering::Acquire)
            && *readiness.source.borrow_and_update()
            && let Some((_, specs)) = &reconciled
            && specs
                .iter()
                .all(|s| board.get(s).is_some_and(|state| state.checks > 0))
        {
            ready.store(true, Ordering::Release);
            info!("ready: every target has been checked once");
        }
        // One decision, read by the table API, the status API and the Kubernetes writers.
        let decided = Decided::new(model, Arc::new(board), Instant::now(), SystemTime::now());
        publish(&outputs.tables, decided.decision.tables.clone(), &metrics);
        let next_change = decided.decision.next_change;
        outputs.decisions.send_replace(Arc::new(decided));
        let damping_ends = async {
            match next_change {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = models.changed() => if r.is_err() { return },
            r = health.changed() => if r.is_err() { return },
            r = readiness.source.changed(), if source_open && !ready.load(Ordering::Acquire) => {
                source_open = r.is_ok();
            }
            () = damping_ends => {}
        }
    }
}

/// Publishes the tables whose version changed (and drops removed clusters'), so that
/// long-polls wake only for real changes.
fn publish(
    tables: &watch::Sender<Arc<TableSet>>,
    built: std::collections::BTreeMap<String, detour_filter::table::wire::TableDoc>,
    metrics: &Metrics,
) {
    tables.send_if_modified(|current| {
        let mut next = TableSet::default();
        let mut changed = current.tables.len() != built.len();
        for (cluster, doc) in built {
            let table = PublishedTable::new(doc);
            match current.get(&cluster) {
                Some(old) if old.version() == table.version() => {
                    next.tables.insert(cluster, old.clone());
                    continue;
                }
                old => {
                    changed = true;
                    if let Some(old) = old {
                        metrics.table_version.remove(&VersionLabels {
                            cluster: cluster.clone(),
                            version: old.version().to_string(),
                        });
                    }
                    metrics
                        .table_version
                        .get_or_create(&VersionLabels {
                            cluster: cluster.clone(),
                            version: table.version().to_string(),
                        })
                        .set(1);
                    metrics
                        .table_updates
                        .get_or_create(&ClusterLabels {
                            cluster: cluster.clone(),
                        })
                        .inc();
                    info!(%cluster, version = table.version(), "new table version");
                    next.tables.insert(cluster, Arc::new(table));
                }
            }
        }
        for (cluster, old) in &current.tables {
            if !next.tables.contains_key(cluster) {
                changed = true;
                metrics.table_version.remove(&VersionLabels {
                    cluster: cluster.clone(),
                    version: old.version().to_string(),
                });
            }
        }
        if changed {
            *current = Arc::new(next);
        }
        changed
    });
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
