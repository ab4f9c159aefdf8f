//! Steady concurrent traffic that records every request: when it was sent, how long it
//! took, and who answered. Tests count it ("zero requests lost") and read failover
//! timelines from it; the demo prints it live.
//!
//! Every request carries `x-test-id: <load>-<worker>-<seq>`, which the upstreams record,
//! so what clients saw can be matched with what servers received.

use crate::client::{HttpClient, Request, TEST_ID};
use crate::runtime::{block_on, runtime};
use crate::wait::{Probe, wait_until};
use anyhow::{Result, ensure};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// The first ten of `samples`, one line each: enough to see what failed in an assertion
/// message without drowning it.
pub fn summaries<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Vec<String> {
    samples.into_iter().take(10).map(Sample::summary).collect()
}

/// What traffic to send.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Concurrent request loops (each holds its own keep-alive connection).
    pub workers: usize,
    /// Each worker sends one request per `pace`; `None` sends back to back.
    pub pace: Option<Duration>,
    /// Requests are taken from this list in turn (e.g. GETs and POSTs mixed).
    pub mix: Vec<Request>,
    /// The load stops by itself after this long, even if never stopped.
    pub max_duration: Duration,
}

impl LoadSpec {
    /// `rate` GETs of `path` per second in total, spread over `workers`.
    pub fn steady_get(path: &str, workers: usize, rate: u32) -> LoadSpec {
        let per_worker = workers as f64 / f64::from(rate.max(1));
        LoadSpec {
            workers,
            pace: Some(Duration::from_secs_f64(per_worker)),
            mix: vec![Request::get(path)],
            max_duration: Duration::from_secs(300),
        }
    }
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Answered {
        status: u16,
        /// `x-served-by`: the member cluster whose upstream answered.
        served_by: Option<String>,
        /// `x-detour-reason`: why detour answered itself.
        reason: Option<String>,
    },
    /// No HTTP answer at all: refused, reset, or timed out.
    Transport(String),
}

/// One request of a load run.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The `x-test-id` it carried.
    pub test_id: String,
    pub method: String,
    pub sent: Instant,
    pub latency: Duration,
    pub outcome: Outcome,
}

impl Sample {
    pub fn served_by(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Answered { served_by, .. } => served_by.as_deref(),
            Outcome::Transport(_) => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self.outcome {
            Outcome::Answered { status, .. } => Some(status),
            Outcome::Transport(_) => None,
        }
    }

    /// `x-detour-reason`: why detour's filter answered this request itself.
    pub fn reason(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Answered { reason, .. } => reason.as_deref(),
            Outcome::Transport(_) => None,
        }
    }

    /// Answered 200 by some member cluster's upstream.
    pub fn succeeded(&self) -> bool {
        self.status() == Some(200) && self.served_by().is_some()
    }

    /// When the answer (or the failure) came.
    pub fn done(&self) -> Instant {
        self.sent + self.latency
    }

    /// One line for assertion messages.
    pub fn summary(&self) -> String {
        match &self.outcome {
            Outcome::Answered {
                status,
                served_by,
                reason,
            } => format!(
                "{} {} -> {status} from {} reason {:?} after {:?}",
                self.method,
                self.test_id,
                served_by.as_deref().unwrap_or("no upstream"),
                reason,
                self.latency
            ),
            Outcome::Transport(e) => format!(
                "{} {} -> transport error after {:?}: {e}",
                self.method, self.test_id, self.latency
            ),
        }
    }
}

/// A running load.
pub struct Load {
    started: Instant,
    stop: watch::Sender<bool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    workers: Vec<JoinHandle<()>>,
}

static LOADS: AtomicU64 = AtomicU64::new(0);

impl Load {
    /// Starts `spec.workers` request loops against `client`.
    pub fn start(client: &HttpClient, spec: LoadSpec) -> Result<Load> {
        ensure!(spec.workers > 0, "a load needs at least one worker");
        ensure!(
            !spec.mix.is_empty(),
            "a load needs at least one request in its mix"
        );
        let rt = runtime()?;
        let load_id = format!(
            "load{}.{}",
            std::process::id(),
            LOADS.fetch_add(1, Ordering::Relaxed)
        );
        let (stop, stopped) = watch::channel(false);
        let samples = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + spec.max_duration);
        let workers = (0..spec.workers)
            .map(|worker| {
                let job = Worker {
                    client: client.clone(),
                    mix: spec.mix.clone(),
                    pace: spec.pace,
                    // Spread the workers' ticks over one pace, so requests form an even
                    // stream rather than bursts (finer failover timelines).
                    phase: spec.pace.map_or(Duration::ZERO, |pace| {
                        pace.mul_f64(worker as f64 / spec.workers as f64)
                    }),
                    id_prefix: format!("{load_id}-{worker}"),
                    offset: worker,
                    samples: samples.clone(),
                    stopped: stopped.clone(),
                    deadline,
                };
                rt.spawn(job.run())
            })
            .collect();
        Ok(Load {
            started,
            stop,
            samples,
            workers,
        })
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// How many requests have completed so far.
    pub fn completed(&self) -> usize {
        self.lock().len()
    }

    /// Requests completed since the first `from` (in completion order): a live view.
    pub fn completed_since(&self, from: usize) -> Vec<Sample> {
        self.lock()
            .get(from..)
            .map(<[Sample]>::to_vec)
            .unwrap_or_default()
    }

    /// Waits until `n` requests sent at or after `after` have completed (a number of
    /// requests rather than a time, so a slow machine still sees enough of them).
    pub fn wait_completed_after(&self, after: Instant, n: usize, within: Duration) -> Result<()> {
        let what = format!("{n} requests sent after the mark have completed");
        wait_until(&what, within, || {
            let done = self.lock().iter().filter(|s| s.sent >= after).count();
            Ok(if done >= n {
                Probe::Ready(())
            } else {
                Probe::NotYet(format!("{done} so far"))
            })
        })
    }

    /// Stops sending, waits for requests in flight, and returns every request.
    pub fn stop(self) -> Result<LoadReport> {
        let _ = self.stop.send(true);
        let workers = self.workers;
        block_on(async move {
            for worker in workers {
                let _ = worker.await;
            }
        })?;
        let mut samples =
            std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()));
        samples.sort_by_key(|s| s.sent);
        Ok(LoadReport {
            started: self.started,
            samples,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Sample>> {
        self.samples.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Worker {
    client: HttpClient,
    mix: Vec<Request>,
    pace: Option<Duration>,
    /// Delay of this worker's first request within the first pace.
    phase: Duration,
    id_prefix: String,
    /// Workers start at different places in the mix, so a mix of GET and POST is mixed
    /// at every moment, not in waves.
    offset: usize,
    samples: Arc<Mutex<Vec<Sample>>>,
    stopped: watch::Receiver<bool>,
    deadline: tokio::time::Instant,
}

impl Worker {
    async fn run(mut self) {
        let first = tokio::time::Instant::now() + self.phase;
        let mut ticks = self.pace.map(|pace| {
            let mut ticks = tokio::time::interval_at(first, pace);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticks
        });
        for seq in 0u64.. {
            if let Some(ticks) = ticks.as_mut() {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = self.stopped.changed() => {}
                }
            }
            if *self.stopped.borrow() || tokio::time::Instant::now() >= self.deadline {
                return;
            }
            let template = &self.mix[(self.offset + seq as usize) % self.mix.len()];
            let test_id = format!("{}-{seq}", self.id_prefix);
            let request = template.clone().header(TEST_ID, &test_id);
            let sent = Instant::now();
            let outcome = match self.client.send_async(request).await {
                Ok(reply) => Outcome::Answered {
                    status: reply.status,
                    served_by: reply.served_by().map(str::to_string),
                    reason: reply.detour_reason().map(str::to_string),
                },
                Err(e) => Outcome::Transport(format!("{e:#}")),
            };
            let sample = Sample {
                test_id,
                method: template.method.to_string(),
                sent,
                latency: sent.elapsed(),
                outcome,
            };
            self.samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(sample);
        }
    }
}

/// Every request of a finished load, in the order they were sent.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub started: Instant,
    pub samples: Vec<Sample>,
}

impl LoadReport {
    pub fn total(&self) -> usize {
        self.samples.len()
    }

    /// Requests not answered 200 by an upstream.
    pub fn failures(&self) -> Vec<&Sample> {
        self.samples.iter().filter(|s| !s.succeeded()).collect()
    }

    /// Requests of `method` (e.g. `GET`) not answered 200 by an upstream.
    pub fn failures_of(&self, method: &str) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.method == method && !s.succeeded())
            .collect()
    }

    /// Successful answers per member cluster.
    pub fn by_cluster(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for cluster in self
            .samples
            .iter()
            .filter(|s| s.succeeded())
            .filter_map(Sample::served_by)
        {
            *counts.entry(cluster.to_string()).or_insert(0) += 1;
        }
        counts
    }

    /// The first request sent at or after `after` that `cluster` answered.
    pub fn first_served_by(&self, cluster: &str, after: Instant) -> Option<&Sample> {
        self.samples
            .iter()
            .find(|s| s.sent >= after && s.served_by() == Some(cluster))
    }

    /// The last request that `cluster` answered.
    pub fn last_served_by(&self, cluster: &str) -> Option<&Sample> {
        self.samples
            .iter()
            .rev()
            .find(|s| s.served_by() == Some(cluster))
    }

    /// From the first request sent to the last answer received.
    pub fn duration(&self) -> Duration {
        let first = self.samples.iter().map(|s| s.sent).min();
        let last = self.samples.iter().map(Sample::done).max();
        match (first, last) {
            (Some(first), Some(last)) => last.saturating_duration_since(first),
            _ => Duration::ZERO,
        }
    }

    /// The latency below which a fraction `q` (0.0–1.0) of successful requests fell,
    /// e.g. `latency_quantile(0.99)` for p99.
    pub fn latency_quantile(&self, q: f64) -> Option<Duration> {
        let mut latencies: Vec<Duration> = self
            .samples
            .iter()
            .filter(|s| s.succeeded())
            .map(|s| s.latency)
            .collect();
        latencies.sort();
        let last = latencies.len().checked_sub(1)?;
        let rank = (q.clamp(0.0, 1.0) * last as f64).round() as usize;
        latencies.get(rank).copied()
    }

    /// Requests sent in `[from, to)`.
    pub fn sent_between(&self, from: Instant, to: Instant) -> impl Iterator<Item = &Sample> {
        self.samples
            .iter()
            .filter(move |s| s.sent >= from && s.sent < to)
    }
}
