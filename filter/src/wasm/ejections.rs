//! Passive ejections shared by every VM of this Envoy through `detour.ejections`.
//!
//! A VM notices other VMs' ejections on its tick, through a stamp: `detour.ejections.stamp`
//! holds an empty value that every writer sets again after changing the ejections, so its
//! CAS token moves with them, and the ejections themselves are read and decoded only when
//! it moved. Requests never read shared data: they read the worker's starts, which are
//! computed again when the ejections change. Writes are compare-and-swap, retried when
//! another worker wrote in between.

use super::host;
use super::log;
use super::worker::{EjectionView, Worker};
use proxy_wasm::types::Status;
use std::rc::Rc;
use std::time::Duration;

pub const KEY: &str = "detour.ejections";
/// Set (empty) after every change of [`KEY`].
pub const STAMP_KEY: &str = "detour.ejections.stamp";

/// A CAS race is lost only to another worker's write; a few rounds always suffice.
const CAS_ROUNDS: usize = 8;

/// Reads the ejections again when the stamp moved; true when they changed.
pub fn tick(worker: &Worker) -> bool {
    let (_, stamp) = host::shared_get(STAMP_KEY);
    if worker
        .ejections
        .get()
        .is_some_and(|view| view.stamp == stamp)
    {
        return false;
    }
    let ejections = host::shared_get(KEY)
        .0
        .map(|b| crate::eject::Ejections::decode(&b))
        .unwrap_or_default();
    let changed = worker
        .ejections
        .get()
        .is_none_or(|view| view.ejections != ejections);
    worker
        .ejections
        .set(Rc::new(EjectionView::new(stamp, ejections)));
    changed
}

/// Ejects `envoy_cluster` for this whole Envoy. Returns how long, or `None` when it was
/// already ejected (another request or worker got there first) or the write failed.
pub fn eject(worker: &Worker, envoy_cluster: &str, now_ms: u64) -> Option<Duration> {
    let passive = &worker.config.passive;
    for _ in 0..CAS_ROUNDS {
        let (bytes, cas) = host::shared_get(KEY);
        let mut set = bytes
            .map(|b| crate::eject::Ejections::decode(&b))
            .unwrap_or_default();
        let span = set.eject(
            envoy_cluster,
            now_ms,
            passive.base_ejection,
            passive.max_ejection,
        )?;
        match host::shared_set(KEY, &set.encode(), cas) {
            Ok(()) => {
                if let Err(status) = host::shared_set(STAMP_KEY, b"", None) {
                    log::warn(|| format!("detour: cannot write {STAMP_KEY}: {status:?}"));
                }
                let (_, stamp) = host::shared_get(STAMP_KEY);
                worker.ejections.set(Rc::new(EjectionView::new(stamp, set)));
                return Some(span);
            }
            Err(Status::CasMismatch) => continue,
            Err(status) => {
                log::error(|| format!("detour: cannot write {KEY}: {status:?}"));
                return None;
            }
        }
    }
    log::warn(|| format!("detour: gave up ejecting {envoy_cluster} after {CAS_ROUNDS} CAS races"));
    None
}
