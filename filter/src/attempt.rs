//! What a failed attempt means: did the request reach the upstream, and may it be
//! replayed to the next target? Decided from Envoy's `response.flags`, the status, and the
//! flags a remote east-west gateway reports in [`GATEWAY_FLAGS_HEADER`].
//!
//! [`GATEWAY_FLAGS_HEADER`]: crate::config::GATEWAY_FLAGS_HEADER

use crate::table::ReplayPolicy;

/// Envoy `StreamInfo::ResponseFlag` bits (stable since Envoy 1.x; see
/// `envoy/stream_info/stream_info.h`).
pub mod flags {
    pub const NO_HEALTHY_UPSTREAM: u64 = 0x2;
    pub const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
    pub const UPSTREAM_REMOTE_RESET: u64 = 0x10;
    pub const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
    pub const UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;
}

/// The outcome of one attempt, as far as failover is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer from the service (any status it chose to send).
    Answered,
    /// The request never reached the service: safe to send elsewhere, whatever the method.
    NotReached(&'static str),
    /// The request may have reached the service (reset, timeout): only idempotent methods
    /// the scheme names may be sent again.
    MaybeReached(&'static str),
}

impl Outcome {
    /// True when the target should be ejected by this Envoy.
    pub fn is_target_failure(self) -> bool {
        !matches!(self, Outcome::Answered)
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::NotReached(why) | Outcome::MaybeReached(why) => why,
        }
    }
}

/// Could an answer with this status be a failed attempt? Envoy answers every failure
/// [`classify`] knows (connect failure, no healthy upstream, reset, timeout) with 502,
/// 503 or 504, and so does a remote gateway; anything else is an answer, so the filter
/// reads no flags on the healthy path.
pub fn may_be_failure(status: u32) -> bool {
    matches!(status, 502..=504)
}

/// Classifies one attempt. `gateway_flags` is the remote gateway's `%RESPONSE_FLAGS%`
/// (e.g. `UF`, `UH,UF`) when the attempt went through one.
pub fn classify(response_flags: u64, status: u32, gateway_flags: Option<&str>) -> Outcome {
    use flags::*;
    if response_flags & UPSTREAM_CONNECTION_FAILURE != 0 {
        return Outcome::NotReached("connect-failure");
    }
    if response_flags & NO_HEALTHY_UPSTREAM != 0 {
        return Outcome::NotReached("no-healthy-upstream");
    }
    if response_flags & (UPSTREAM_REMOTE_RESET | UPSTREAM_CONNECTION_TERMINATION) != 0 {
        return Outcome::MaybeReached("reset");
    }
    if response_flags & UPSTREAM_REQUEST_TIMEOUT != 0 {
        return Outcome::MaybeReached("timeout");
    }
    if (status == 503 || status == 502 || status == 504)
        && let Some(remote) = gateway_flags
    {
        let has = |f: &str| remote.split(',').any(|x| x.trim() == f);
        if has("UF") {
            return Outcome::NotReached("gateway-connect-failure");
        }
        if has("UH") {
            return Outcome::NotReached("gateway-no-healthy-upstream");
        }
        if has("UR") || has("UC") {
            return Outcome::MaybeReached("gateway-reset");
        }
        if has("UT") {
            return Outcome::MaybeReached("gateway-timeout");
        }
    }
    Outcome::Answered
}

/// Header Envoy's router adds to every answer that came from an upstream, also on the
/// calls a filter dispatches; Envoy's own error answers lack it.
pub const UPSTREAM_SERVICE_TIME_HEADER: &str = "x-envoy-upstream-service-time";

/// Classifies the answer to a replay (a `dispatch_http_call`, which has no
/// `response.flags`). A 502/503/504 without [`UPSTREAM_SERVICE_TIME_HEADER`] is Envoy
/// reporting that the target gave no answer (connect failure, reset, timeout: it cannot
/// tell which, so "may have reached"); a remote gateway's report is read as for a
/// routed attempt.
pub fn classify_call(status: u32, gateway_flags: Option<&str>, from_upstream: bool) -> Outcome {
    if may_be_failure(status) && !from_upstream {
        return Outcome::MaybeReached("no-answer");
    }
    classify(0, status, gateway_flags)
}

/// Why a failed request may not be replayed; sent to the client in `x-detour-reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReplay {
    /// The method is not in `replay.methods` and the request may have been delivered.
    MethodNotReplayable,
    /// The body was larger than `replay.maxBodyBytes` (or still streaming).
    BodyNotBuffered,
    /// This request was already replayed once.
    AlreadyReplayed,
    /// No other usable target exists.
    NoTarget,
    /// A request header is not UTF-8, and Envoy's call API (through the SDK) carries
    /// only text: the request cannot be sent again unaltered.
    HeadersNotText,
}

impl NoReplay {
    pub fn reason(self, outcome: Outcome) -> String {
        let why = match self {
            NoReplay::MethodNotReplayable => "method-not-replayable",
            NoReplay::BodyNotBuffered => "body-not-buffered",
            NoReplay::AlreadyReplayed => "replay-failed",
            NoReplay::NoTarget => "no-healthy-target",
            NoReplay::HeadersNotText => "headers-not-utf8",
        };
        format!("{}; {why}", outcome.label())
    }
}

/// May a request that ended in `outcome` be replayed?
pub fn may_replay(
    outcome: Outcome,
    method: &str,
    policy: &ReplayPolicy,
    body_buffered: bool,
    already_replayed: bool,
) -> Result<(), NoReplay> {
    if already_replayed {
        return Err(NoReplay::AlreadyReplayed);
    }
    match outcome {
        Outcome::Answered => Err(NoReplay::NoTarget),
        Outcome::MaybeReached(_) if !policy.allows_method(method) => {
            Err(NoReplay::MethodNotReplayable)
        }
        _ if !body_buffered => Err(NoReplay::BodyNotBuffered),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ReplayPolicy {
        ReplayPolicy {
            methods: vec!["GET".into(), "PUT".into()],
            max_body_bytes: 1024,
        }
    }

    #[test]
    fn local_failures_are_read_from_response_flags() {
        assert_eq!(
            classify(0x20, 503, None),
            Outcome::NotReached("connect-failure")
        );
        assert_eq!(
            classify(0x2, 503, None),
            Outcome::NotReached("no-healthy-upstream")
        );
        assert_eq!(classify(0x10, 503, None), Outcome::MaybeReached("reset"));
        assert_eq!(classify(0x40, 503, None), Outcome::MaybeReached("reset"));
        assert_eq!(classify(0x4, 504, None), Outcome::MaybeReached("timeout"));
        assert_eq!(classify(0, 200, None), Outcome::Answered);
    }

    #[test]
    fn only_gateway_statuses_are_worth_classifying() {
        assert!(may_be_failure(503) && may_be_failure(502) && may_be_failure(504));
        assert!(!may_be_failure(200) && !may_be_failure(500) && !may_be_failure(404));
    }

    #[test]
    fn a_services_own_503_is_an_answer() {
        assert_eq!(classify(0, 503, None), Outcome::Answered);
        assert_eq!(classify(0, 500, Some("UF")), Outcome::Answered);
    }

    #[test]
    fn a_remote_gateway_reports_what_it_could_not_reach() {
        assert_eq!(
            classify(0, 503, Some("UF")),
            Outcome::NotReached("gateway-connect-failure")
        );
        assert_eq!(
            classify(0, 503, Some("UH,UF")),
            Outcome::NotReached("gateway-connect-failure")
        );
        assert_eq!(
            classify(0, 503, Some("UC")),
            Outcome::MaybeReached("gateway-reset")
        );
    }

    #[test]
    fn a_replay_answer_made_by_envoy_is_a_failure() {
        assert_eq!(
            classify_call(503, None, false),
            Outcome::MaybeReached("no-answer")
        );
        assert_eq!(classify_call(503, None, true), Outcome::Answered);
        assert_eq!(classify_call(200, None, false), Outcome::Answered);
        assert_eq!(
            classify_call(503, Some("UF"), true),
            Outcome::NotReached("gateway-connect-failure")
        );
    }

    #[test]
    fn replay_follows_the_method_rules() {
        let p = policy();
        let reached = Outcome::MaybeReached("reset");
        let not_reached = Outcome::NotReached("connect-failure");
        assert_eq!(may_replay(not_reached, "POST", &p, true, false), Ok(()));
        assert_eq!(may_replay(reached, "GET", &p, true, false), Ok(()));
        assert_eq!(
            may_replay(reached, "POST", &p, true, false),
            Err(NoReplay::MethodNotReplayable)
        );
        assert_eq!(
            may_replay(not_reached, "POST", &p, false, false),
            Err(NoReplay::BodyNotBuffered)
        );
        assert_eq!(
            may_replay(not_reached, "GET", &p, true, true),
            Err(NoReplay::AlreadyReplayed)
        );
    }

    #[test]
    fn the_reason_says_what_happened_and_why_not_replayed() {
        assert_eq!(
            NoReplay::MethodNotReplayable.reason(Outcome::MaybeReached("reset")),
            "reset; method-not-replayable"
        );
        assert_eq!(
            NoReplay::HeadersNotText.reason(Outcome::NotReached("connect-failure")),
            "connect-failure; headers-not-utf8"
        );
    }
}
