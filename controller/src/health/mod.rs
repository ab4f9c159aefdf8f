//! Active health checking: one task per check made ([`Prober::probed`]) probes on its
//! interval and records the result, for every [`ProbeSpec`] that check stands for, on
//! the shared [`HealthBoard`]; the table builder watches the board.

pub mod grpc;
pub mod probe;

use crate::metrics::{CheckLabels, Metrics, TransitionLabels};
use detour_core::health::HealthMap;
use detour_core::health::state::TargetState;
use detour_core::model::{ProbeSpec, TargetRef};
use detour_filter::health::Health;
use probe::{ProbeResult, Prober};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{Instrument, info, info_span, warn};

/// The health of every checked target. Watchers wake on every transition and on each
/// target's first result (readiness waits for those).
#[derive(Clone)]
pub struct HealthBoard {
    tx: Arc<watch::Sender<HealthMap>>,
}

impl Default for HealthBoard {
    fn default() -> Self {
        HealthBoard::new()
    }
}

impl HealthBoard {
    pub fn new() -> HealthBoard {
        HealthBoard {
            tx: Arc::new(watch::Sender::new(HashMap::new())),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<HealthMap> {
        self.tx.subscribe()
    }

    /// A copy of one target's state.
    pub fn get(&self, spec: &ProbeSpec) -> Option<TargetState> {
        self.tx.borrow().get(spec).cloned()
    }

    /// Starts tracking `spec`; returns its initial health. A target already checked
    /// through the same gateway under another policy (a reload changed the interval or
    /// the path) keeps its health: the target did not change, and falling back to
    /// Unknown would move traffic for nothing. The new policy's checks then decide.
    fn track(&self, spec: &ProbeSpec) -> Health {
        let mut health = Health::Unknown;
        self.tx.send_if_modified(|map| {
            if let Some(state) = map.get(spec) {
                health = state.health;
                return false;
            }
            let state = map
                .iter()
                .find(|(s, _)| s.target == spec.target && s.gateways == spec.gateways)
                .map(|(_, state)| state.clone())
                .unwrap_or_else(|| TargetState::new(Instant::now()));
            health = state.health;
            map.insert(spec.clone(), state);
            true
        });
        health
    }

    fn forget(&self, spec: &ProbeSpec) {
        self.tx.send_if_modified(|map| map.remove(spec).is_some());
    }

    /// `target`'s service has ready endpoints again after having none: every check of
    /// it records a recovery ([`TargetState::endpoints_returned`]) that failback damping
    /// holds back.
    pub fn endpoints_returned(&self, target: &TargetRef) {
        let (at, at_wall) = (Instant::now(), SystemTime::now());
        self.tx.send_if_modified(|map| {
            let mut changed = false;
            for (spec, state) in map.iter_mut() {
                if spec.target == *target {
                    changed |= state.endpoints_returned(at, at_wall);
                }
            }
            changed
        });
    }

    /// Records a result; returns the new state when the health changed.
    fn record(&self, spec: &ProbeSpec, result: &ProbeResult) -> Option<(Health, TargetState)> {
        let mut changed = None;
        self.tx.send_if_modified(|map| {
            let Some(state) = map.get_mut(spec) else {
                return false; // forgotten while the probe was in flight
            };
            let transition = state.observe(result.check(), &spec.check, Instant::now());
            state.last = Some(result.to_string());
            if let Some(t) = transition {
                changed = Some((t.from, state.clone()));
            }
            // The decision task also waits for every target's first verdict, which
            // may be a count of checks rather than a change.
            transition.is_some() || state.checks <= u64::from(spec.check.unhealthy_threshold.max(1))
        });
        changed
    }
}

/// Runs one checker task per probe spec of the current model.
pub struct Checker {
    board: HealthBoard,
    prober: Prober,
    metrics: Arc<Metrics>,
    /// Every spec the board tracks (the last `wanted`).
    tracked: BTreeSet<ProbeSpec>,
    /// One task per check actually made ([`Prober::probed`]), with the specs whose
    /// state it records.
    tasks: HashMap<ProbeSpec, CheckTask>,
}

struct CheckTask {
    handle: JoinHandle<()>,
    specs: watch::Sender<Vec<ProbeSpec>>,
}

impl Checker {
    pub fn new(board: HealthBoard, prober: Prober, metrics: Arc<Metrics>) -> Checker {
        Checker {
            board,
            prober,
            metrics,
            tracked: BTreeSet::new(),
            tasks: HashMap::new(),
        }
    }

    /// The board the checkers record on.
    pub fn board(&self) -> &HealthBoard {
        &self.board
    }

    /// Starts checks for new specs and stops those no longer wanted. A spec that stays
    /// keeps its task and its state: a reload does not make targets Unknown again.
    /// Specs that differ only in a caller whose certificate the prober does not present
    /// share one check: without per-caller certificates (plaintext, or a cluster the
    /// controller has none of) a target named by the schemes of three clusters is
    /// asked once per interval, not three times.
    pub fn reconcile(&mut self, wanted: &BTreeSet<ProbeSpec>) {
        // New ones first, so that they can inherit the state of the ones they replace.
        for spec in wanted.difference(&self.tracked) {
            let health = self.board.track(spec);
            self.metrics.set_target_health(&spec.target, health);
        }
        let mut checks: HashMap<ProbeSpec, Vec<ProbeSpec>> = HashMap::new();
        for spec in wanted {
            checks
                .entry(self.prober.probed(spec))
                .or_default()
                .push(spec.clone());
        }
        self.tasks.retain(|probed, task| {
            let kept = checks.contains_key(probed);
            if !kept {
                task.handle.abort();
            }
            kept
        });
        for (probed, specs) in checks {
            if let Some(task) = self.tasks.get(&probed) {
                task.specs.send_if_modified(|current| {
                    let changed = *current != specs;
                    *current = specs;
                    changed
                });
                continue;
            }
            let span = info_span!(
                "health_check",
                cluster = %probed.target.cluster,
                service = %probed.target.service,
                gateway = %probed.gateway_list(),
                check = %probed.check.kind,
            );
            let (specs, specs_rx) = watch::channel(specs);
            let handle = tokio::spawn(
                check_forever(
                    probed.clone(),
                    specs_rx,
                    self.board.clone(),
                    self.prober.clone(),
                    self.metrics.clone(),
                )
                .instrument(span),
            );
            self.tasks.insert(probed, CheckTask { handle, specs });
        }
        for spec in self.tracked.difference(wanted) {
            self.board.forget(spec);
            if !wanted.iter().any(|w| w.target == spec.target) {
                self.metrics.forget_target(&spec.target);
            }
        }
        self.tracked = wanted.clone();
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.handle.abort();
        }
    }
}

/// Checks `probed` on its interval and records each result for every spec of `specs`
/// (the schemes' views of that one check).
async fn check_forever(
    probed: ProbeSpec,
    specs: watch::Receiver<Vec<ProbeSpec>>,
    board: HealthBoard,
    prober: Prober,
    metrics: Arc<Metrics>,
) {
    // Each target is checked at its own point of the interval, so that the checks of
    // many targets spread over it instead of all starting at once: thousands of
    // connections opened in the same instant make checks time out that would pass, and
    // every false transition rebuilds the tables. A target's first verdict comes within
    // one interval.
    let first = tokio::time::Instant::now() + phase(&probed);
    let mut ticker = tokio::time::interval_at(first, probed.check.interval);
    // A check that falls due while the controller is busy (at start, thousands of
    // targets at once) runs late, and the next one is back at the target's own phase:
    // delaying the whole schedule instead would keep every check that fell due together
    // in the same instant for good.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let target = Metrics::target_labels(&probed.target);
    loop {
        ticker.tick().await;
        let result = prober.probe(&probed).await;
        metrics
            .health_checks
            .get_or_create(&CheckLabels {
                target: target.clone(),
                result: result.label(),
            })
            .inc();
        // The specs of one check see the same results and move together: the
        // transition is counted and logged once.
        let mut changed = None;
        for spec in specs.borrow().iter() {
            changed = board.record(spec, &result).or(changed);
        }
        let Some((from, state)) = changed else {
            continue;
        };
        metrics.set_target_health(&probed.target, state.health);
        metrics
            .health_transitions
            .get_or_create(&TransitionLabels {
                target: target.clone(),
                to: state.health.as_str(),
            })
            .inc();
        if state.health == Health::Unhealthy {
            warn!(%from, to = %state.health, last = %result, "target is unhealthy");
        } else {
            info!(%from, to = %state.health, last = %result, "target health changed");
        }
    }
}

/// Where in its interval a target is checked: fixed per target (a hash of what is
/// checked), and spread evenly over many targets.
fn phase(spec: &ProbeSpec) -> std::time::Duration {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    spec.hash(&mut hasher);
    let interval = u64::try_from(spec.check.interval.as_nanos()).unwrap_or(u64::MAX);
    std::time::Duration::from_nanos(hasher.finish() % interval.max(1))
}

#[cfg(test)]
mod tests;
