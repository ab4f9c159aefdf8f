//! The state one VM (one Envoy worker thread) keeps between callbacks and shares between
//! its root context and its HTTP contexts. Nothing here is copied per request: HTTP
//! contexts take `Rc` handles to immutable snapshots.

use super::stats::{Metric, Stats};
use crate::config::FilterConfig;
use crate::eject::Ejections;
use crate::rng::Rng;
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

/// The decoded `detour.ejections` and the CAS token it was decoded from.
#[derive(Default)]
pub struct EjectionView {
    pub cas: Option<u32>,
    pub ejections: Ejections,
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
    rng: Cell<Rng>,
}

impl Worker {
    pub fn new(config: FilterConfig, seed: u64) -> Worker {
        Worker {
            config,
            stats: Stats::define(),
            snapshot: Slot::empty(),
            ejections: Slot::empty(),
            rng: Cell::new(Rng::new(seed)),
        }
    }

    /// A number that differs between requests (spreads load by weight, jitters back-off).
    pub fn random(&self) -> u32 {
        let mut rng = self.rng.get();
        let value = rng.next_u32();
        self.rng.set(rng);
        value
    }
}
