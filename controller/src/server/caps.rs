//! Caps on the requests that stay open: table long-polls (`--max-long-polls`) and the
//! status API's watchers (`--max-status-watchers`: event streams and status long-polls,
//! on the ops listener). A request over its cap is answered at once with 503, a JSON
//! body saying which cap and the flag that sets it, and `Retry-After`, so the open
//! connections stay bounded and `/healthz` and the table API keep answering.

use super::unavailable;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Default of `--max-long-polls`: one fetcher per Envoy waits at a time.
pub const DEFAULT_MAX_LONG_POLLS: usize = 4096;
/// Default of `--max-status-watchers`: browsers on `/ui/` and `detour status --watch`.
pub const DEFAULT_MAX_STATUS_WATCHERS: usize = 64;

/// At most `max` holders at a time.
#[derive(Debug, Clone)]
pub struct Slots {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    taken: AtomicUsize,
    max: usize,
    /// What the 503 says is full, and the flag that sets the cap.
    what: &'static str,
    flag: &'static str,
}

/// One slot, given back on drop.
#[derive(Debug)]
pub struct Slot(Arc<Inner>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A refusal: every slot is taken.
#[derive(Debug)]
pub struct Full(Arc<Inner>);

impl IntoResponse for Full {
    fn into_response(self) -> Response {
        unavailable(
            &format!(
                "too many {}: the cap of {} is reached ({}); retry later",
                self.0.what, self.0.max, self.0.flag
            ),
            "5",
        )
    }
}

impl Slots {
    pub fn new(max: usize, what: &'static str, flag: &'static str) -> Slots {
        Slots {
            inner: Arc::new(Inner {
                taken: AtomicUsize::new(0),
                max,
                what,
                flag,
            }),
        }
    }

    /// The table API's long-polls.
    pub fn long_polls(max: usize) -> Slots {
        Slots::new(max, "table long-polls waiting", "--max-long-polls")
    }

    /// The status API's event streams and long-polls.
    pub fn status_watchers(max: usize) -> Slots {
        Slots::new(
            max,
            "status watchers (event streams and long-polls)",
            "--max-status-watchers",
        )
    }

    /// A slot, or [`Full`]: the 503 that refuses the request.
    pub fn take(&self) -> Result<Slot, Full> {
        let taken = self
            .inner
            .taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.inner.max).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Slot(self.inner.clone())),
            Err(_) => Err(Full(self.inner.clone())),
        }
    }

    pub fn taken(&self) -> usize {
        self.inner.taken.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{StatusCode, header};

    #[test]
    fn a_slot_over_the_cap_is_a_503_naming_the_flag_and_slots_come_back() {
        let slots = Slots::long_polls(2);
        let a = slots.take().unwrap();
        let _b = slots.take().unwrap();
        let refused = slots.take().unwrap_err().into_response();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.headers().contains_key(header::RETRY_AFTER));
        drop(a);
        assert_eq!(slots.taken(), 1);
        assert!(slots.take().is_ok());
    }
}
