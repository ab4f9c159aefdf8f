//! Passive ejections shared by every VM of this Envoy through `detour.ejections`.
//! Reads are cached by CAS token (decoded only when another worker changed them);
//! writes are compare-and-swap, retried when another worker wrote in between.

use super::host;
use super::log;
use super::worker::{EjectionView, Worker};
use proxy_wasm::types::Status;
use std::rc::Rc;
use std::time::Duration;

pub const KEY: &str = "detour.ejections";

/// A CAS race is lost only to another worker's write; a few rounds always suffice.
const CAS_ROUNDS: usize = 8;

/// The ejections as they are now. One hostcall; decoding only when they changed.
pub fn current(worker: &Worker) -> Rc<EjectionView> {
    let (bytes, cas) = host::shared_get(KEY);
    if let Some(view) = worker.ejections.get()
        && view.cas == cas
    {
        return view;
    }
    let view = Rc::new(EjectionView {
        cas,
        ejections: bytes
            .map(|b| crate::eject::Ejections::decode(&b))
            .unwrap_or_default(),
    });
    worker.ejections.set(view.clone());
    view
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
            Ok(()) => return Some(span),
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
