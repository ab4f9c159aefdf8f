//! How Envoy's router carries a request of a scheme once the filter chose where it
//! starts: the chain of attempts and the retry policy, by method. `detour render envoy`
//! writes routes from these; they live beside the filter's decision because together
//! they are the data plane's promise (DESIGN.md "Zero loss", "Failure domains").
//!
//! * A priority group with several instances (of a local service, or of a remote
//!   gateway) gets [`ATTEMPTS_PER_GROUP`] attempts in a row: the retry after a failed
//!   attempt goes to another instance of the same cluster before the request leaves the
//!   cluster — an instance is not a service. A group of one instance gets one attempt:
//!   asking it again could only repeat its answer (a gateway already tried every
//!   instance behind it).
//! * An attempt that never reached a service instance (connect failure, refused stream,
//!   or a detour gateway saying it could not reach its service) is retried whatever the
//!   method. One that may have reached it (reset, per-try timeout, a gateway's timeout)
//!   is retried only for the scheme's `replay.methods`.
//! * A service's own answer, whatever its status, is never retried: it is the answer.

use std::time::Duration;

/// Attempts on one group before the chain moves on: the first, and one retry on another
/// host (Envoy's `previous_hosts` predicate keeps it off the one that failed).
pub const ATTEMPTS_PER_GROUP: usize = 2;

/// The router's retry conditions for a request that must not be sent twice: only
/// failures that prove the request never reached a service instance.
pub const NEVER_REACHED: &str = "connect-failure,refused-stream,retriable-headers";
/// And for a method of `replay.methods`: also resets (which may come after the service
/// started on it) and per-try timeouts.
pub const MAYBE_REACHED: &str = "connect-failure,refused-stream,retriable-headers,reset";

/// Response flags (Envoy's `%RESPONSE_FLAGS%`) a detour gateway puts in
/// `x-detour-gateway-flags` when it answered itself because it could not hand the
/// request to its service: no healthy upstream, connect failure, its own retries on
/// connect failures exhausted, no route, no cluster, overflow. The request never
/// reached the service, so any method may go on.
pub const NEVER_REACHED_FLAGS_REGEX: &str = "^(.*,)?(UH|UF|URX|NR|NC|UO)(,.*)?$";
/// Any flag at all: the gateway answered itself (timeouts and resets included).
pub const ANY_FLAGS_REGEX: &str = "^.+$";

/// Which requests a route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Methods {
    /// The scheme's `replay.methods`: safe to send again after a maybe-reached failure.
    Replayable,
    /// Every other method.
    Other,
}

/// The retry policy of one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub retry_on: &'static str,
    /// Every attempt of the chain after the first.
    pub num_retries: u32,
    /// Gateway flags (regex over `x-detour-gateway-flags`) that make a gateway's answer
    /// retriable.
    pub gateway_flags_regex: &'static str,
    /// An attempt that hangs this long goes on (replayable methods only).
    pub per_try_timeout: Option<Duration>,
}

/// The group of each attempt of a request that starts at group `start`, for a scheme
/// whose groups (the primary's included) have `hosts[g]` instances each: e.g.
/// `[start, start, start+1, ..., last, 0, 1, ..., start-1]`. Envoy's `priority_group`
/// cluster specifier walks this list, one entry per attempt.
///
/// The groups before `start` come last rather than never: the filter skipped them
/// because they were believed down a moment ago, and when every later group fails too
/// (churn everywhere, or a verdict already out of date) a last try there costs one
/// quick failure, while leaving them out would fail a request some cluster could still
/// answer. Each group still appears once per chain, so no target is asked twice more
/// than its instances allow.
pub fn attempts(hosts: &[usize], start: usize) -> Vec<usize> {
    if start >= hosts.len() {
        return Vec::new();
    }
    let per_group = |g: usize, n: usize| std::iter::repeat_n(g, n.clamp(1, ATTEMPTS_PER_GROUP));
    let (skipped, from_start) = hosts.split_at(start);
    from_start
        .iter()
        .enumerate()
        .map(|(i, &n)| (start + i, n))
        .chain(skipped.iter().copied().enumerate())
        .flat_map(|(g, n)| per_group(g, n))
        .collect()
}

/// The retry policy of a route whose chain has `attempts` entries.
pub fn retry_policy(
    attempts: usize,
    methods: Methods,
    per_try_timeout: Option<Duration>,
) -> RetryPolicy {
    let num_retries = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
    match methods {
        Methods::Replayable => RetryPolicy {
            retry_on: MAYBE_REACHED,
            num_retries,
            gateway_flags_regex: ANY_FLAGS_REGEX,
            per_try_timeout,
        },
        Methods::Other => RetryPolicy {
            retry_on: NEVER_REACHED,
            num_retries,
            gateway_flags_regex: NEVER_REACHED_FLAGS_REGEX,
            per_try_timeout: None,
        },
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn a_group_of_several_instances_gets_a_second_attempt_from_the_start_on() {
        assert_eq!(attempts(&[3, 2, 2], 0), [0, 0, 1, 1, 2, 2]);
        assert!(attempts(&[3, 2, 2], 3).is_empty());
        // One instance (a single gateway): one attempt; none is never zero.
        assert_eq!(attempts(&[2, 1, 0], 0), [0, 0, 1, 2]);
    }

    #[test]
    fn a_chain_that_starts_late_comes_back_to_the_groups_it_skipped_last() {
        assert_eq!(attempts(&[3, 2, 2], 2), [2, 2, 0, 0, 1, 1]);
        assert_eq!(attempts(&[3, 1, 2], 1), [1, 2, 2, 0, 0]);
        // Whatever the start, every group is in the chain, each as often as from 0.
        for start in 0..3 {
            let mut chain = attempts(&[3, 1, 2], start);
            chain.sort_unstable();
            assert_eq!(chain, attempts(&[3, 1, 2], 0), "start {start}");
        }
    }

    #[test]
    fn a_request_that_may_have_reached_the_service_goes_on_only_if_replayable() {
        let timeout = Some(Duration::from_secs(1));
        let other = retry_policy(6, Methods::Other, timeout);
        assert_eq!(other.num_retries, 5);
        assert!(!other.retry_on.contains("reset"));
        assert_eq!(other.per_try_timeout, None);
        let replayable = retry_policy(6, Methods::Replayable, timeout);
        assert!(replayable.retry_on.contains("reset"));
        assert_eq!(replayable.per_try_timeout, timeout);
        // A chain of one attempt retries nothing.
        assert_eq!(retry_policy(1, Methods::Other, None).num_retries, 0);
    }

    #[test]
    fn every_method_goes_on_only_after_flags_of_a_request_that_never_got_there() {
        for flag in ["UH", "UF", "URX", "NR", "NC", "UO"] {
            assert!(NEVER_REACHED_FLAGS_REGEX.contains(flag), "{flag}");
        }
        // A gateway's timeout or reset may have reached the service.
        for flag in ["UT", "UC", "UR", "LR"] {
            assert!(
                !NEVER_REACHED_FLAGS_REGEX.contains(&format!("|{flag}|")),
                "{flag}"
            );
        }
    }
}
