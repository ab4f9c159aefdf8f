//! The decision task: keeps one health checker per probe spec of the current model,
//! and makes one decision ([`detour_core::decide`]) whenever the model or a target's
//! health changes, or a failback damping window ends. Its tables go to the table API
//! (those whose version changed); the whole decision goes to the status API's task and
//! the Kubernetes status writer, so that they all report the same moment.

use crate::health::Checker;
use crate::metrics::{ClusterLabels, Metrics, VersionLabels};
use crate::table_limit;
use detour_core::decide::Decided;
use detour_core::health::HealthMap;
use detour_core::model::{Model, ProbeSpec};
use detour_core::tables::{PublishedTable, TableSet};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tracing::info;

/// Where each decision goes: its tables (versioned, for the table API) and the whole
/// decision (status API, Kubernetes status and Events).
pub struct Outputs {
    pub tables: watch::Sender<Arc<TableSet>>,
    pub decisions: watch::Sender<Arc<Decided>>,
    /// The filters' `maxTableBytes`: a larger table is not served ([`table_limit`]).
    pub max_table_bytes: usize,
}

impl Outputs {
    /// Decides on `model` and `board` now, and publishes: the tables whose version
    /// changed first (only once `tables` is true: the first full round of checks is
    /// done), then the decision (whose readers look the versions up). Returns when the
    /// decision changes by itself (a damping window ending).
    pub fn decide(
        &self,
        model: Arc<Model>,
        board: HealthMap,
        tables: bool,
        metrics: &Metrics,
    ) -> Option<Instant> {
        let decided = Decided::new(model, Arc::new(board), Instant::now(), SystemTime::now());
        if tables {
            publish(
                &self.tables,
                decided.decision.tables.clone(),
                self.max_table_bytes,
                metrics,
            );
        }
        let next_change = decided.decision.next_change;
        self.decisions.send_replace(Arc::new(decided));
        next_change
    }
}

/// Ready once the source has listed everything and every target has its first verdict
/// ([`first_round_done`]); no table is published before that.
pub struct Readiness {
    pub ready: Arc<AtomicBool>,
    pub source: watch::Receiver<bool>,
}

/// Shortest time between two table builds: under a burst of health changes, builds of
/// every cluster's table back to back would take the CPU the checks need, and make
/// them time out (more changes). A change waits at most this long to be published.
const MIN_BUILD_GAP: Duration = Duration::from_millis(100);

/// Keeps one checker per probe spec of the current model, and rebuilds the tables
/// whenever the model or a target's health changes, or a failback damping window ends;
/// publishes those whose content changed. Checkers are reconciled here, just before the
/// build, so a new model never meets a board that does not know its targets yet.
pub async fn run(
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
            // A service whose endpoints return is a recovery to damp like one the
            // checks see: its checks may never have failed while it had no instance.
            if let Some((before, _)) = &reconciled {
                for target in model.endpoints_returned(before) {
                    info!(%target, "ready endpoints again: failback waits for stableFor");
                    checker.board().endpoints_returned(&target);
                }
            }
            reconciled = Some((model.clone(), specs));
        }
        // A copy, so that the build does not hold the board: every checker that
        // records a result needs it, and would wait (blocking its worker thread) for
        // as long as a build of thousands of schemes takes.
        let board = health.borrow_and_update().clone();
        let was_ready = ready.load(Ordering::Acquire);
        let now_ready = was_ready
            || (*readiness.source.borrow_and_update()
                && reconciled
                    .as_ref()
                    .is_some_and(|(_, specs)| first_round_done(specs, &board)));
        let next_change = outputs.decide(model, board, now_ready, &metrics);
        // Ready only once the first tables are out: a table request that sees `ready`
        // must find its cluster's table.
        if now_ready && !was_ready {
            ready.store(true, Ordering::Release);
            info!("ready: every target has its first verdict; tables published");
        }
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

/// Every target has its first verdict ([`TargetState::has_first_verdict`]). Before
/// this, a restarted controller knows nothing a table could say: publishing all-Unknown
/// tables would send failed-over schemes back to a dead primary until its checks fail
/// again, so the Envoys keep their last table instead.
///
/// [`TargetState::has_first_verdict`]: detour_core::health::state::TargetState::has_first_verdict
pub fn first_round_done(specs: &BTreeSet<ProbeSpec>, board: &HealthMap) -> bool {
    specs.iter().all(|s| {
        board
            .get(s)
            .is_some_and(|state| state.has_first_verdict(&s.check))
    })
}

/// Publishes the tables whose version changed (and drops removed clusters'), so that
/// long-polls wake only for real changes.
fn publish(
    tables: &watch::Sender<Arc<TableSet>>,
    built: std::collections::BTreeMap<String, detour_filter::table::wire::TableDoc>,
    max_table_bytes: usize,
    metrics: &Metrics,
) {
    tables.send_if_modified(|current| {
        let mut next = TableSet::default();
        let mut changed = current.sizes.len() != built.len();
        for (cluster, doc) in built {
            let table = PublishedTable::new(doc);
            let before = current.size(&cluster);
            let size = table_limit::measure(&cluster, &table, before, max_table_bytes, metrics);
            changed |= before != Some(&size);
            next.sizes.insert(cluster.clone(), size);
            let old = current.get(&cluster);
            // Over the limit, every filter would refuse it: the last good table (if any)
            // stays, as it does when the version is the same.
            if size.over_limit() || old.is_some_and(|old| old.version() == table.version()) {
                if let Some(old) = old {
                    next.tables.insert(cluster, old.clone());
                }
                continue;
            }
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
        for (cluster, old) in &current.tables {
            if !next.tables.contains_key(cluster) {
                changed = true;
                metrics.table_version.remove(&VersionLabels {
                    cluster: cluster.clone(),
                    version: old.version().to_string(),
                });
            }
        }
        for cluster in current.sizes.keys() {
            if !next.sizes.contains_key(cluster) {
                metrics.table_bytes.remove(&ClusterLabels {
                    cluster: cluster.clone(),
                });
            }
        }
        if changed {
            *current = Arc::new(next);
        }
        changed
    });
}
