//! The fetcher lease: which worker of this Envoy fetches tables.
//!
//! Every worker thread runs its own VM, and Istio's `WasmPlugin` gives no singleton
//! service, so the workers elect the fetcher among themselves: the lease lives in shared
//! data (`detour.lease`) as `worker-id expiry-ms`, is taken with compare-and-swap, and is
//! renewed on tick while held. A worker whose VM is gone stops renewing; another takes
//! over once the lease expires.

/// Lifetime of a lease; the holder renews it when less than half is left, so a tick
/// delayed by a busy worker does not lose it.
pub const LEASE_TTL_MS: u64 = 3_000;

/// The decoded value of `detour.lease`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub expires_ms: u64,
}

impl Lease {
    /// Reads the shared-data value; anything unreadable counts as "no lease", so a torn
    /// or foreign value is simply taken over.
    pub fn decode(bytes: &[u8]) -> Option<Lease> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (holder, expires) = text.trim().split_once(' ')?;
        if holder.is_empty() {
            return None;
        }
        Some(Lease {
            holder: holder.to_string(),
            expires_ms: expires.parse().ok()?,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        format!("{} {}", self.holder, self.expires_ms).into_bytes()
    }
}

/// What a worker does with the lease on a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseStep {
    /// It holds a lease with time to spare: fetch, write nothing.
    Hold,
    /// It holds the lease (or held it and nobody took it since): extend it with CAS.
    Renew,
    /// Nobody holds a live lease: try to take it with CAS.
    Take,
    /// Another worker holds a live lease: do not fetch.
    Follow,
}

impl LeaseStep {
    /// True when the step writes the lease (and becomes the holder if the CAS succeeds).
    pub fn writes(self) -> bool {
        matches!(self, LeaseStep::Renew | LeaseStep::Take)
    }
}

/// Decides the step of worker `me` at `now_ms`, given the current lease.
pub fn step(current: Option<&Lease>, me: &str, now_ms: u64, ttl_ms: u64) -> LeaseStep {
    match current {
        None => LeaseStep::Take,
        Some(l) if l.holder == me => {
            if l.expires_ms.saturating_sub(now_ms) < ttl_ms / 2 {
                LeaseStep::Renew
            } else {
                LeaseStep::Hold
            }
        }
        Some(l) if now_ms >= l.expires_ms => LeaseStep::Take,
        Some(_) => LeaseStep::Follow,
    }
}

/// The lease `me` writes when it takes or renews.
pub fn claim(me: &str, now_ms: u64, ttl_ms: u64) -> Lease {
    Lease {
        holder: me.to_string(),
        expires_ms: now_ms.saturating_add(ttl_ms),
    }
}

/// A worker id that is unique across the VMs of one Envoy (and across restarts): 64
/// random bits as hex. The caller supplies the randomness.
pub fn worker_id(random: u64) -> String {
    format!("{random:016x}")
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const TTL: u64 = 3_000;

    fn lease(holder: &str, expires_ms: u64) -> Lease {
        Lease {
            holder: holder.into(),
            expires_ms,
        }
    }

    #[test]
    fn a_free_or_expired_lease_is_taken() {
        assert_eq!(step(None, "a", 10, TTL), LeaseStep::Take);
        assert_eq!(step(Some(&lease("b", 10)), "a", 10, TTL), LeaseStep::Take);
    }

    #[test]
    fn a_live_lease_of_another_worker_is_respected() {
        assert_eq!(step(Some(&lease("b", 11)), "a", 10, TTL), LeaseStep::Follow);
    }

    #[test]
    fn the_holder_renews_when_half_the_time_is_gone() {
        assert_eq!(step(Some(&lease("a", 3_000)), "a", 0, TTL), LeaseStep::Hold);
        assert_eq!(
            step(Some(&lease("a", 3_000)), "a", 1_499, TTL),
            LeaseStep::Hold
        );
        assert_eq!(
            step(Some(&lease("a", 3_000)), "a", 1_501, TTL),
            LeaseStep::Renew
        );
        // Expired but nobody took it: still ours to renew (the CAS decides races).
        assert_eq!(
            step(Some(&lease("a", 3_000)), "a", 9_000, TTL),
            LeaseStep::Renew
        );
    }

    #[test]
    fn encoding_round_trips_and_garbage_is_no_lease() {
        let l = claim(&worker_id(0xdead_beef), 5, TTL);
        assert_eq!(l.holder, "00000000deadbeef");
        assert_eq!(Lease::decode(&l.encode()), Some(l));
        for bad in [&b""[..], b"x", b" 5", b"a b", b"\xff 1"] {
            assert_eq!(Lease::decode(bad), None, "{bad:?}");
        }
    }
}
