//! Holding the fetcher lease (`detour.lease`, decided by `crate::lease`).

use super::host;
use super::log;
use crate::lease::{LEASE_TTL_MS, Lease, LeaseStep, claim, step};

pub const KEY: &str = "detour.lease";

pub struct LeaseKeeper {
    /// This VM's worker id, unique across the VMs of this Envoy.
    me: String,
    holding: bool,
}

impl LeaseKeeper {
    pub fn new(me: String) -> LeaseKeeper {
        LeaseKeeper { me, holding: false }
    }

    pub fn id(&self) -> &str {
        &self.me
    }

    /// Takes, renews or follows the lease; true while this VM holds it.
    pub fn tick(&mut self, now_ms: u64) -> bool {
        let (bytes, cas) = host::shared_get(KEY);
        let current = bytes.as_deref().and_then(Lease::decode);
        let next = step(current.as_ref(), &self.me, now_ms, LEASE_TTL_MS);
        let holding = match next {
            LeaseStep::Hold => true,
            LeaseStep::Follow => false,
            LeaseStep::Renew | LeaseStep::Take => {
                let lease = claim(&self.me, now_ms, LEASE_TTL_MS);
                host::shared_set(KEY, &lease.encode(), cas).is_ok()
            }
        };
        if holding != self.holding {
            log::info(|| {
                if holding {
                    format!("detour: worker {} now fetches tables", self.me)
                } else {
                    format!("detour: worker {} no longer fetches tables", self.me)
                }
            });
            self.holding = holding;
        }
        holding
    }

    /// Is the lease still ours right now? Asked before storing a fetched table, so a
    /// VM that lost the lease while its call was in flight does not overwrite a newer
    /// table stored by the new holder.
    pub fn still_held(&self, now_ms: u64) -> bool {
        let (bytes, _) = host::shared_get(KEY);
        bytes
            .as_deref()
            .and_then(Lease::decode)
            .is_some_and(|l| l.holder == self.me && now_ms < l.expires_ms)
    }

    /// Gives the lease up when this VM shuts down, so another takes over at once
    /// instead of after the lease expires.
    pub fn release(&mut self) {
        if !self.holding {
            return;
        }
        let (bytes, cas) = host::shared_get(KEY);
        if bytes
            .as_deref()
            .and_then(Lease::decode)
            .is_some_and(|l| l.holder == self.me)
        {
            let _ = host::shared_set(KEY, b"", cas);
        }
        self.holding = false;
    }
}
