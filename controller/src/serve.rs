//! `detour serve`: wiring only. It starts the source ([`crate::source`]: files or
//! Kubernetes, the same way), in Kubernetes mode the leader-elected writers (a task group
//! of their own: [`detour_kube::run::KubeSource::start_writers`]), the decision task
//! ([`crate::decisions`]: health checkers, one decision per change), the status API's
//! task ([`crate::reporter`]) and the HTTP server(s) ([`crate::server`]).
//!
//! Listeners: without TLS, `--listen` serves the table API and the operational
//! endpoints, unless `--ops-listen` gives the latter their own. With TLS, `--listen`
//! serves only the table API, over mTLS, and `--ops-listen` (then required) serves
//! `/healthz`, `/readyz`, `/metrics`, the status API and `/ui/` in plain HTTP. Certificates (server and probe)
//! are read at start (an unusable file stops the start, naming it) and reloaded when
//! they change on disk.

use crate::client::Connections;
use crate::decisions::{self, Outputs, Readiness};
use crate::health::probe::Prober;
use crate::health::{Checker, HealthBoard};
use crate::metrics::Metrics;
use crate::reporter::{self, Feeds, Versions};
use crate::server::caps::Slots;
use crate::server::conn::ConnLimits;
use crate::server::{self, Access, AppState};
pub use crate::source::Source;
use crate::source::{SourceFeeds, Started};
use crate::tls::config::{TlsFiles, server_config};
use crate::tls::reload::load_and_watch;
use crate::tls::server::TlsListener;
use anyhow::Context;
use detour_core::decide::Decided;
use detour_core::health::HealthMap;
use detour_core::model::{Catalogue, Model};
use detour_core::report::events::EventLog;
use detour_core::report::tracker::Tracker;
use detour_core::tables::TableSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{Instrument, info, info_span};

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
    /// Header-read and idle timeouts of every connection, on both listeners.
    pub conn_limits: ConnLimits,
    /// Table long-polls waiting at once; more are answered 503.
    pub max_long_polls: usize,
    /// Status event streams and status long-polls at once; more are answered 503.
    pub max_status_watchers: usize,
    /// The filters' `maxTableBytes`: a larger table is never served.
    pub max_table_bytes: usize,
    /// A `detour certs init` directory whose certificates' expiry is reported
    /// (`detour_certificate_expiry_seconds`, the status page).
    pub certs: Option<std::path::PathBuf>,
}

/// How long shutdown waits for the Lease to be released.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    if opts.tls.is_some() && opts.ops_listen.is_none() {
        anyhow::bail!(
            "with TLS, /healthz, /readyz and /metrics need a plain listener of their own: add --ops-listen ADDR:PORT"
        );
    }
    if opts.conn_limits.idle_timeout <= opts.max_wait {
        anyhow::bail!(
            "--idle-timeout ({:?}) must be longer than --max-wait ({:?}): a long-poll is silent while it waits",
            opts.conn_limits.idle_timeout,
            opts.max_wait
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
            let prober = Prober::tls_watched(load_and_watch(
                "health probe client certificate",
                files.all(),
                opts.reload_interval,
                move || crate::tls::client::mtls_client(&files, Connections::Reused),
            )?);
            // With a certs init directory, the checks for a scheme present its
            // primary's Envoy certificate, as that Envoy does to the same gateways.
            match &opts.certs {
                Some(dir) => prober.with_callers(crate::tls::client::envoy_clients(
                    &detour_core::pki::layout::Layout::new(dir),
                    opts.reload_interval,
                )),
                None => prober,
            }
        }
        None => Prober::new(),
    };
    let metrics = Arc::new(Metrics::new());
    let board = HealthBoard::new();
    let (models_tx, models) = watch::channel(Arc::new(Model::default()));
    let (catalogue_tx, catalogue_rx) = watch::channel(Arc::new(Catalogue::new()));
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
    let source_kind = opts.source.kind();
    let started = opts
        .source
        .start(
            SourceFeeds {
                models: models_tx,
                catalogue: catalogue_tx,
                ready: source_ready_tx,
                config: config_tx,
            },
            opts.reload_interval,
            &metrics,
        )
        .await?;
    // Kubernetes: the leader-elected writers, a task group of their own.
    let election = match started {
        Started::Files => None,
        Started::Kubernetes(source) => {
            Some(source.start_writers(decisions_rx.clone(), tables_rx.clone(), shutdown_rx.clone()))
        }
    };

    // The first decision (every target Unknown) goes to the status API at once; the
    // first tables only once every target has its first verdict (`decisions::run`):
    // until then table requests wait (long-polls) or get 503, and the Envoys keep the
    // table they hold.
    metrics
        .table_max_bytes
        .set(i64::try_from(opts.max_table_bytes).unwrap_or(i64::MAX));
    let outputs = Outputs {
        tables: tables_tx,
        decisions: decisions_tx,
        max_table_bytes: opts.max_table_bytes,
    };
    outputs.decide(models.borrow().clone(), HealthMap::new(), false, &metrics);

    let ready = Arc::new(AtomicBool::new(false));
    let mut versions = Versions::new(SystemTime::now());
    let (status_tx, status_rx) = reporter::channel(&mut versions, source_kind);
    let (certificates_tx, certificates_rx) = watch::channel(Vec::new());
    if let Some(dir) = opts.certs.clone() {
        tokio::spawn(
            // A few dozen small files, looked at at most once a second (read again only
            // when one changed), as renewals land.
            crate::tls::expiry::watch(
                dir,
                opts.reload_interval.max(Duration::from_secs(1)),
                metrics.clone(),
                certificates_tx,
            )
            .instrument(info_span!("certificates")),
        );
    }
    tokio::spawn(
        reporter::run(
            Tracker::new(source_kind, EventLog::default()),
            Feeds {
                decisions: decisions_rx,
                tables: tables_rx.clone(),
                config: config_rx,
                catalogue: catalogue_rx,
                ready: ready.clone(),
                certificates: certificates_rx,
            },
            versions,
            status_tx,
        )
        .instrument(info_span!("status_api")),
    );
    let checker = Checker::new(board.clone(), prober, metrics.clone());
    tokio::spawn(
        decisions::run(
            models,
            checker,
            board.subscribe(),
            outputs,
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
        long_polls: Slots::long_polls(opts.max_long_polls),
        status_watchers: Slots::status_watchers(opts.max_status_watchers),
    };
    let limits = opts.conn_limits;
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
                limits,
                stopped(),
            ))
        }
        (None, Some(_)) => {
            info!(%address, "serving the table API");
            tokio::spawn(server::serve(
                listener,
                server::table_router(state.clone()),
                limits,
                stopped(),
            ))
        }
        (None, None) => {
            info!(%address, "serving the table API, /healthz, /readyz, /metrics, /v1/status and /ui/");
            tokio::spawn(server::serve(
                listener,
                server::router(state.clone()),
                limits,
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
                limits,
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
