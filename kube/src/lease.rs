//! Leader election on a `coordination.k8s.io/v1` Lease. Every replica serves tables; only
//! the holder of the Lease writes status, Events and Secrets.
//!
//! [`Elector`] is the pure state machine (time is a parameter); [`LeaseApi`] does the
//! API calls; [`Leadership`] is what writers check before each write; [`run`] drives them.
//!
//! * Expiry is judged by the local clock from when this replica last saw the Lease
//!   change, not from the `renewTime` written by another machine: clocks of two nodes
//!   may disagree, a duration measured on one clock does not depend on that.
//! * Writes carry the `resourceVersion` read, so two replicas taking over at once cannot
//!   both win: the API server refuses the second with 409 Conflict.
//! * A leader counts its term from the moment it *sent* its last successful write and
//!   stops writing `renew_deadline` after it, shorter than the `lease_duration` the others
//!   wait: when renewals stop succeeding, this replica stops writing before another can
//!   start, whether or not its renewal task runs at all (the gate checks the clock).

use super::Error;
use crate::metrics::KubeMetrics;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long the others wait after the Lease last changed before taking it.
    pub lease_duration: Duration,
    /// How long a leader keeps writing after its last successful renewal was sent.
    pub renew_deadline: Duration,
    /// How often every replica reads (and the leader renews) the Lease.
    pub retry_period: Duration,
}

impl Default for Timing {
    /// client-go's defaults.
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What matters of a Lease for the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub holder: Option<String>,
    pub duration: Duration,
    pub transitions: i32,
    /// `metadata.resourceVersion`: changes with every write.
    pub version: Option<String>,
}

impl Record {
    pub fn of(lease: &Lease) -> Record {
        let spec = lease.spec.clone().unwrap_or_default();
        Record {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            duration: Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
            ),
            transitions: spec.lease_transitions.unwrap_or(0),
            version: lease.metadata.resource_version.clone(),
        }
    }
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// No Lease exists: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Its holder let it expire (or released it): take it.
    TakeOver,
    /// Someone else holds it.
    Wait,
}

/// The election, as seen by one replica.
#[derive(Debug, Clone)]
pub struct Elector {
    identity: String,
    timing: Timing,
    /// The Lease as last read, and when it last changed as seen from here.
    seen: Option<(Record, Instant)>,
    leading_until: Option<Instant>,
}

impl Elector {
    pub fn new(identity: &str, timing: Timing) -> Elector {
        Elector {
            identity: identity.to_string(),
            timing,
            seen: None,
            leading_until: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    fn holds(&self, record: &Record) -> bool {
        record.holder.as_deref() == Some(self.identity.as_str())
    }

    /// Records the Lease as just read (`None`: there is none).
    pub fn observe(&mut self, lease: Option<Record>, now: Instant) {
        let Some(record) = lease else {
            // Deleted under us: whatever we held is gone.
            self.seen = None;
            self.leading_until = None;
            return;
        };
        if !self.holds(&record) {
            self.leading_until = None;
        }
        let changed = self
            .seen
            .as_ref()
            .is_none_or(|(old, _)| old.version != record.version || old.holder != record.holder);
        match &mut self.seen {
            Some((old, _)) if !changed => *old = record,
            _ => self.seen = Some((record, now)),
        }
    }

    pub fn step(&self, now: Instant) -> Step {
        match &self.seen {
            None => Step::Create,
            Some((r, _)) if self.holds(r) => Step::Renew,
            Some((r, _)) if r.holder.is_none() => Step::TakeOver,
            Some((r, seen_at)) if now >= *seen_at + r.duration => Step::TakeOver,
            Some(_) => Step::Wait,
        }
    }

    /// Our write, sent at `sent_at`, succeeded and left the Lease as `record`.
    pub fn won(&mut self, record: Record, sent_at: Instant) {
        if !self.holds(&record) {
            self.observe(Some(record), sent_at);
            return;
        }
        self.seen = Some((record, sent_at));
        self.leading_until = Some(sent_at + self.timing.renew_deadline);
    }

    /// Our write lost a race (409): someone else wrote the Lease; stop at once.
    pub fn conflicted(&mut self) {
        self.seen = None;
        self.leading_until = None;
    }

    /// We let go (shutdown).
    pub fn released(&mut self) {
        self.leading_until = None;
    }

    pub fn is_leader(&self, now: Instant) -> bool {
        self.leading_until.is_some_and(|until| now < until)
    }

    pub fn leading_until(&self) -> Option<Instant> {
        self.leading_until
    }

    /// The Lease to write for `step`, from the one read (`current`), at wall time `wall`.
    pub fn lease_for(
        &self,
        step: Step,
        current: Option<&Lease>,
        name: &str,
        wall: Timestamp,
    ) -> Option<Lease> {
        let seconds = i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let mut lease = current.cloned().unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            spec: None,
        });
        let mut spec = lease.spec.take().unwrap_or_default();
        match step {
            Step::Wait => return None,
            Step::Create => {
                spec = LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(wall)),
                    renew_time: Some(MicroTime(wall)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                };
            }
            Step::Renew => {
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(MicroTime(wall));
            }
            Step::TakeOver => {
                spec.holder_identity = Some(self.identity.clone());
                spec.lease_duration_seconds = Some(seconds);
                spec.acquire_time = Some(MicroTime(wall));
                spec.renew_time = Some(MicroTime(wall));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
        }
        lease.spec = Some(spec);
        Some(lease)
    }

    /// The Lease that lets go of `current` (holder cleared, 1s duration: the others may
    /// take it at once).
    pub fn release_of(&self, current: &Lease, wall: Timestamp) -> Option<Lease> {
        let mut lease = current.clone();
        let spec = lease.spec.as_mut()?;
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return None;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(wall));
        Some(lease)
    }
}

/// A clock writers' checks read; tests substitute a fake one.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Whether this replica may write now. Cheap to clone; every writer holds one and calls
/// [`Leadership::check`] right before each write.
#[derive(Clone)]
pub struct Leadership {
    until: Arc<watch::Sender<Option<Instant>>>,
    clock: Arc<dyn Clock>,
}

impl Leadership {
    pub fn new(clock: Arc<dyn Clock>) -> Leadership {
        Leadership {
            until: Arc::new(watch::Sender::new(None)),
            clock,
        }
    }

    /// Always leading: tests of the writers.
    #[cfg(test)]
    pub(crate) fn always() -> Leadership {
        let l = Leadership::new(Arc::new(SystemClock));
        l.set(Some(
            Instant::now() + Duration::from_secs(10 * 365 * 24 * 3600),
        ));
        l
    }

    pub fn is_leader(&self) -> bool {
        self.until
            .borrow()
            .is_some_and(|until| self.clock.now() < until)
    }

    pub fn check(&self) -> Result<(), Error> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }

    pub fn set(&self, until: Option<Instant>) {
        self.until.send_if_modified(|u| {
            let changed = u.is_some() != until.is_some();
            *u = until;
            changed
        });
    }

    /// Wakes when this replica starts or stops leading (not on each renewal).
    pub fn subscribe(&self) -> watch::Receiver<Option<Instant>> {
        self.until.subscribe()
    }
}

/// The Lease's API calls.
#[derive(Clone)]
pub struct LeaseApi {
    api: Api<Lease>,
    name: String,
}

impl LeaseApi {
    pub fn new(client: Client, namespace: &str, name: &str) -> LeaseApi {
        LeaseApi {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
        }
    }

    pub async fn get(&self) -> Result<Option<Lease>, Error> {
        Ok(self.api.get_opt(&self.name).await?)
    }

    /// Creates or replaces (with the `resourceVersion` it carries) the Lease; `None` when
    /// another replica got there first (409).
    pub async fn write(&self, lease: &Lease, create: bool) -> Result<Option<Lease>, Error> {
        let pp = PostParams::default();
        let result = if create {
            self.api.create(&pp, lease).await
        } else {
            self.api.replace(&self.name, &pp, lease).await
        };
        match result {
            Ok(lease) => Ok(Some(lease)),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// One round: read the Lease, then create, renew or take it over when the state machine
/// says so. `now` is when the round started (a write's term counts from before it was
/// sent). Returns whether this replica leads afterwards.
pub async fn round(
    elector: &mut Elector,
    api: &LeaseApi,
    now: Instant,
    wall: Timestamp,
) -> Result<bool, Error> {
    let current = api.get().await?;
    elector.observe(current.as_ref().map(Record::of), now);
    let step = elector.step(now);
    let Some(lease) = elector.lease_for(step, current.as_ref(), &api.name, wall) else {
        return Ok(elector.is_leader(now));
    };
    match api.write(&lease, step == Step::Create).await? {
        Some(written) => elector.won(Record::of(&written), now),
        None => elector.conflicted(),
    }
    Ok(elector.is_leader(now))
}

/// Runs the election until `shutdown`, then releases the Lease if held.
pub async fn run(
    mut elector: Elector,
    api: LeaseApi,
    leadership: Leadership,
    mut shutdown: watch::Receiver<bool>,
    metrics: Arc<KubeMetrics>,
) {
    let mut leading = false;
    loop {
        let now = Instant::now();
        if let Err(e) = round(&mut elector, &api, now, Timestamp::now()).await {
            metrics.kube_error("lease", &e);
            warn!(error = %e, "leader election: cannot read or write the Lease");
        }
        leadership.set(elector.leading_until());
        let is_leader = elector.is_leader(Instant::now());
        if is_leader != leading {
            leading = is_leader;
            metrics.set_leader(leading);
            if leading {
                info!(
                    identity = elector.identity(),
                    "leading: this replica writes status, events and Secrets"
                );
            } else {
                warn!(identity = elector.identity(), "not leading: writes stop");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(elector.timing().retry_period) => {}
            _ = shutdown.changed() => break,
        }
    }
    // Stop writing first, then let the others take over without waiting for expiry.
    let was_leader = elector.is_leader(Instant::now());
    leadership.set(None);
    elector.released();
    metrics.set_leader(false);
    if was_leader
        && let Ok(Some(current)) = api.get().await
        && let Some(release) = elector.release_of(&current, Timestamp::now())
    {
        match api.write(&release, false).await {
            Ok(_) => info!("released the Lease"),
            Err(e) => warn!(error = %e, "could not release the Lease; it expires by itself"),
        }
    }
}

#[cfg(test)]
mod tests;
