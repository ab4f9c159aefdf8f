//! The state one VM (one Envoy worker thread) keeps between callbacks and shares between
//! its root context and its HTTP contexts. Nothing here is copied per request: HTTP
//! contexts take `Rc` handles to immutable snapshots.

use super::stats::{Metric, Stats};
use crate::config::FilterConfig;
use crate::eject::Ejections;
use crate::request::Strikes;
use crate::rng::Rng;
use crate::start::Starts;
use crate::table::Table;
use std::cell::Cell;
use std::rc::Rc;

/// One table version as this worker uses it: the compiled table and its failover
/// counters.
pub struct Snapshot {
    pub table: Table,
    /// `failover[scheme][group]`.
    pub failover: Vec<Vec<Metric>>,
}

impl Snapshot {
    pub fn failover_counter(&self, scheme: usize, group: usize) -> Metric {
        self.failover
            .get(scheme)
            .and_then(|g| g.get(group))
            .copied()
            .unwrap_or_default()
    }
}

/// The decoded `detour.ejections`, and the CAS token of `detour.ejections.stamp` when it
/// was read.
#[derive(Default)]
pub struct EjectionView {
    pub stamp: Option<u32>,
    pub ejections: Ejections,
}

impl EjectionView {
    pub fn new(stamp: Option<u32>, ejections: Ejections) -> EjectionView {
        EjectionView { stamp, ejections }
    }
}

/// A value replaced wholesale and read as an `Rc` handle. Built on `Cell`, so reading
/// and replacing can never fail (unlike a `RefCell` borrow).
pub struct Slot<T>(Cell<Option<Rc<T>>>);

impl<T> Slot<T> {
    pub fn empty() -> Slot<T> {
        Slot(Cell::new(None))
    }

    pub fn get(&self) -> Option<Rc<T>> {
        let value = self.0.take();
        self.0.set(value.clone());
        value
    }

    pub fn set(&self, value: Rc<T>) {
        self.0.set(Some(value));
    }
}

pub struct Worker {
    pub config: FilterConfig,
    pub stats: Stats,
    /// The table in use, once one was fetched (by any worker) and parsed (by this one).
    pub snapshot: Slot<Snapshot>,
    /// Last decoded passive ejections.
    pub ejections: Slot<EjectionView>,
    /// Where each scheme's requests start: computed again when the table or the
    /// ejections change, or when an ejection runs out; read (not computed) per request.
    pub starts: Slot<Starts>,
    /// Set on each tick: the next request is watched even when all is quiet (see
    /// `crate::request::on_request_headers`).
    pub sample: Cell<bool>,
    /// Watched answers from a later group than their start, in a row, per scheme.
    pub strikes: Cell<Strikes>,
    rng: Cell<Rng>,
    /// The wall clock (ms) as last read by this VM: at most a tick behind.
    clock: Cell<u64>,
}

impl Worker {
    pub fn new(config: FilterConfig, seed: u64) -> Worker {
        Worker {
            config,
            stats: Stats::define(),
            snapshot: Slot::empty(),
            ejections: Slot::empty(),
            starts: Slot::empty(),
            sample: Cell::new(false),
            strikes: Cell::new(Strikes::default()),
            rng: Cell::new(Rng::new(seed)),
            clock: Cell::new(0),
        }
    }

    /// The wall clock in ms (a hostcall); remembered for [`Worker::clock_ms`].
    pub fn now_ms(&self) -> u64 {
        let now = super::host::now_ms();
        self.clock.set(now);
        now
    }

    /// The wall clock as this VM last read it (on its tick at the latest): never ahead
    /// of the true time, so "this ejection ended before `clock_ms`" is always true too.
    pub fn clock_ms(&self) -> u64 {
        self.clock.get()
    }

    /// Computes where each scheme's requests start now, from the table in use and the
    /// ejections as last read.
    pub fn recompute_starts(&self, now_ms: u64) {
        let Some(snapshot) = self.snapshot.get() else {
            return;
        };
        let ejections = self.ejections.get();
        let no_ejections = Ejections::default();
        let ejections = ejections.as_ref().map_or(&no_ejections, |v| &v.ejections);
        self.starts
            .set(Rc::new(Starts::compute(&snapshot.table, ejections, now_ms)));
    }

    /// A number that differs between requests (spreads load by weight, jitters back-off).
    pub fn random(&self) -> u32 {
        let mut rng = self.rng.get();
        let value = rng.next_u32();
        self.rng.set(rng);
        value
    }
}
