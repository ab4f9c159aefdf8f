//! The table fetcher as a state machine, free of Envoy: when to ask the controller next,
//! how to back off when it fails, and when a change of state deserves one log line.
//!
//! Only the worker holding the lease ([`crate::lease`]) drives it; the glue sends the
//! request and feeds each result back through [`Fetcher::finished`].

use crate::config::ControllerConfig;
use crate::duration::format_duration;
use crate::table::TableError;
use std::time::Duration;

/// Why a fetch brought no usable table. The last good table stays in use ("fail static").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// No answer: the call could not be sent, timed out, or the connection failed.
    Unreachable(String),
    /// An answer other than 200 or 304.
    Status(u32),
    /// An answer other than 200 or 304 that says when to ask again (`Retry-After` in
    /// seconds): the controller's caps on waiting clients, or a restarted controller
    /// before its first round of checks. The next fetch waits at least that long.
    RetryAfter { status: u32, after: Duration },
    /// A 200 whose table this filter refuses.
    Rejected(TableError),
}

impl FetchError {
    /// Stable label for stats (`detour.fetch.error.<label>`).
    pub fn label(&self) -> &'static str {
        match self {
            FetchError::Unreachable(_) => "unreachable",
            FetchError::Status(_) | FetchError::RetryAfter { .. } => "status",
            FetchError::Rejected(_) => "rejected",
        }
    }

    /// Errors of the same kind and cause are one state: repeating it logs nothing.
    fn state_key(&self) -> String {
        match self {
            FetchError::Unreachable(_) => "unreachable".into(),
            FetchError::Status(code) | FetchError::RetryAfter { status: code, .. } => {
                format!("status {code}")
            }
            FetchError::Rejected(e) => format!("rejected {}", e.label()),
        }
    }
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Unreachable(why) => write!(f, "controller unreachable: {why}"),
            FetchError::Status(code) => write!(f, "controller answered HTTP {code}"),
            FetchError::RetryAfter { status, after } => write!(
                f,
                "controller answered HTTP {status}, asking to retry after {}",
                format_duration(*after)
            ),
            FetchError::Rejected(e) => write!(f, "table refused: {e}"),
        }
    }
}

/// How one fetch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchResult {
    /// 200 with a good table (now stored).
    Updated,
    /// 304: the table we have is current.
    NotModified,
    Failed(FetchError),
}

/// A change worth one log line (never one per attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Fetching started failing, or fails now for another reason.
    Failing(FetchError),
    /// Fetching works again after `failures` failed attempts.
    Recovered { failures: u32 },
}

/// The fetcher's state in the lease holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetcher {
    /// Consecutive failed fetches; sets the back-off.
    failures: u32,
    /// What the current failure state is about, for log-once.
    failing: Option<String>,
    /// The fetch in flight: its call token and when it was sent.
    in_flight: Option<(u32, u64)>,
    /// No fetch starts before this (wall-clock ms).
    next_at_ms: u64,
}

impl Default for Fetcher {
    fn default() -> Self {
        Fetcher::new()
    }
}

impl Fetcher {
    pub fn new() -> Fetcher {
        Fetcher {
            failures: 0,
            failing: None,
            in_flight: None,
            next_at_ms: 0,
        }
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Should a fetch start now? Also gives up on a call whose answer never came
    /// (Envoy enforces the call timeout; this is a guard against losing the callback).
    pub fn due(&mut self, now_ms: u64, config: &ControllerConfig) -> bool {
        if let Some((_, sent_ms)) = self.in_flight {
            let give_up = sent_ms.saturating_add(millis(config.fetch_timeout()) + 5_000);
            if now_ms < give_up {
                return false;
            }
            self.in_flight = None;
        }
        now_ms >= self.next_at_ms
    }

    /// Records that the call with `token` was sent at `now_ms`.
    pub fn sent(&mut self, token: u32, now_ms: u64) {
        self.in_flight = Some((token, now_ms));
    }

    /// Is `token` the answer we are waiting for?
    pub fn is_current(&self, token: u32) -> bool {
        self.in_flight.is_some_and(|(t, _)| t == token)
    }

    /// Records the end of the fetch in flight (or a fetch that could not be sent).
    /// `jitter` is any random number; it spreads the retries of many Envoys.
    pub fn finished(
        &mut self,
        result: &FetchResult,
        now_ms: u64,
        config: &ControllerConfig,
        jitter: u32,
    ) -> Option<Change> {
        let sent_ms = self.in_flight.take().map_or(now_ms, |(_, sent)| sent);
        match result {
            FetchResult::Updated | FetchResult::NotModified => {
                let change = self.failing.take().map(|_| Change::Recovered {
                    failures: self.failures,
                });
                self.failures = 0;
                self.next_at_ms = next_after_success(result, sent_ms, now_ms, config);
                change
            }
            FetchResult::Failed(error) => {
                self.failures = self.failures.saturating_add(1);
                let mut wait = backoff(
                    self.failures,
                    config.poll_interval,
                    config.max_backoff,
                    jitter,
                );
                if let FetchError::RetryAfter { after, .. } = error {
                    wait = wait.max(asked_wait(*after, config.max_backoff, jitter));
                }
                self.next_at_ms = now_ms.saturating_add(millis(wait));
                let key = error.state_key();
                if self.failing.as_deref() == Some(key.as_str()) {
                    None
                } else {
                    self.failing = Some(key);
                    Some(Change::Failing(error.clone()))
                }
            }
        }
    }
}

/// The wait a `Retry-After` asks for, no longer than `max` (a controller cannot stop
/// fetching for good), spread over up to half as long again: the Envoys a capped
/// controller turned away together do not come back together.
fn asked_wait(after: Duration, max: Duration, jitter: u32) -> Duration {
    let wait_ms = millis(after.min(max));
    Duration::from_millis(wait_ms + u64::from(jitter) % (wait_ms / 2 + 1))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What an answer from the controller's Envoy cluster means, before its body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200: a table to check.
    Table,
    /// 304: the table held is current.
    NotModified,
    Failed(FetchError),
}

/// Header Envoy's router adds to every answer that came from an upstream, also on the
/// calls a filter dispatches; Envoy's own error answers lack it.
pub const UPSTREAM_SERVICE_TIME_HEADER: &str = "x-envoy-upstream-service-time";

/// The `:status` of an answer's header map.
pub fn status_of(headers: &crate::pairs::Pairs) -> Option<u32> {
    headers
        .get(":status")
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
}

/// An answer's `Retry-After`, when it is a number of seconds (what the controller
/// sends; an HTTP date is ignored).
pub fn retry_after_of(headers: &crate::pairs::Pairs) -> Option<Duration> {
    let text = std::str::from_utf8(headers.get("retry-after")?).ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Reads the status of a fetch. Envoy answers a call it could not deliver (controller
/// down, connect timeout) itself, with a 5xx that lacks the
/// [`x-envoy-upstream-service-time`](crate::attempt::UPSTREAM_SERVICE_TIME_HEADER)
/// header every upstream answer gets; `envoy_says` is the body of that answer. The
/// controller's `retry_after` counts only on its own answers.
pub fn classify_answer(
    status: u32,
    from_upstream: bool,
    retry_after: Option<Duration>,
    envoy_says: &str,
) -> Answer {
    match status {
        200 => Answer::Table,
        304 => Answer::NotModified,
        s if s >= 500 && !from_upstream => {
            let detail: String = envoy_says.trim().chars().take(160).collect();
            Answer::Failed(FetchError::Unreachable(if detail.is_empty() {
                format!("Envoy answered {s}")
            } else {
                detail
            }))
        }
        s => Answer::Failed(match retry_after {
            Some(after) if from_upstream => FetchError::RetryAfter { status: s, after },
            _ => FetchError::Status(s),
        }),
    }
}

/// When to ask again after a good answer. Long-polling: at once after a new table (the
/// controller holds the next request until something changes); after a 304 at once too,
/// unless it came back sooner than a poll interval (a controller that ignores `wait`
/// must not be hammered). Plain polling: one poll interval after the request was sent.
fn next_after_success(
    result: &FetchResult,
    sent_ms: u64,
    now_ms: u64,
    config: &ControllerConfig,
) -> u64 {
    let interval = millis(config.poll_interval);
    if config.long_poll.is_zero() {
        return sent_ms.saturating_add(interval).max(now_ms);
    }
    match result {
        FetchResult::Updated => now_ms,
        _ => sent_ms.saturating_add(interval).max(now_ms),
    }
}

/// Exponential back-off after `failures` consecutive failures (1 = first): the poll
/// interval doubled per failure, capped at `max`, then "equal jitter" (between half and
/// all of it) so that Envoys that lost the controller together do not return together.
pub fn backoff(failures: u32, base: Duration, max: Duration, jitter: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let full = base.saturating_mul(1u32 << exp).min(max);
    let full_ms = millis(full);
    let half = full_ms / 2;
    Duration::from_millis(half + u64::from(jitter) % (full_ms - half + 1))
}

/// The request path: `{path}?wait={longPoll}` when long-polling, else `{path}`.
pub fn request_path(config: &ControllerConfig) -> String {
    if config.long_poll.is_zero() {
        config.path.clone()
    } else {
        let sep = if config.path.contains('?') { '&' } else { '?' };
        format!(
            "{}{sep}wait={}",
            config.path,
            format_duration(config.long_poll)
        )
    }
}

/// `If-None-Match` for the version we hold (an ETag is a quoted string).
pub fn if_none_match(version: &str) -> String {
    format!("\"{version}\"")
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::config::FilterConfig;

    fn config(extra: &str) -> ControllerConfig {
        let json = format!(r#"{{"cluster":"east","controller":{{{extra}}}}}"#);
        FilterConfig::parse(json.as_bytes()).unwrap().controller
    }

    fn failed() -> FetchResult {
        FetchResult::Failed(FetchError::Unreachable("reset".into()))
    }

    #[test]
    fn the_request_long_polls_with_the_held_version() {
        assert_eq!(request_path(&config("")), "/v1/tables/east?wait=30s");
        assert_eq!(
            request_path(&config(r#""longPoll":"1500ms""#)),
            "/v1/tables/east?wait=1.5s"
        );
        assert_eq!(request_path(&config(r#""longPoll":0"#)), "/v1/tables/east");
        assert_eq!(if_none_match("v7"), "\"v7\"");
    }

    #[test]
    fn envoys_own_error_answers_mean_unreachable() {
        assert_eq!(classify_answer(200, true, None, ""), Answer::Table);
        assert_eq!(classify_answer(304, true, None, ""), Answer::NotModified);
        assert_eq!(
            classify_answer(503, false, None, "upstream connect error\n"),
            Answer::Failed(FetchError::Unreachable("upstream connect error".into()))
        );
        assert_eq!(
            classify_answer(503, true, None, ""),
            Answer::Failed(FetchError::Status(503))
        );
        assert_eq!(
            classify_answer(404, false, None, ""),
            Answer::Failed(FetchError::Status(404))
        );
    }

    #[test]
    fn the_controllers_retry_after_holds_the_next_fetch_back() {
        let five = Some(Duration::from_secs(5));
        let busy = classify_answer(503, true, five, "");
        assert_eq!(
            busy,
            Answer::Failed(FetchError::RetryAfter {
                status: 503,
                after: Duration::from_secs(5)
            })
        );
        // Only the controller's own answer counts, not Envoy's.
        assert!(matches!(
            classify_answer(503, false, five, "no healthy upstream"),
            Answer::Failed(FetchError::Unreachable(_))
        ));
        let header = |value: &str| {
            crate::pairs::Pairs::from_pairs([(&b"retry-after"[..], value.as_bytes())])
        };
        assert_eq!(retry_after_of(&header(" 5 ")), five);
        assert_eq!(
            retry_after_of(&header("Wed, 21 Oct 2026 07:28:00 GMT")),
            None
        );

        let c = config(r#""pollInterval":"1s","maxBackoff":"30s""#);
        let Answer::Failed(error) = busy else {
            unreachable!()
        };
        for jitter in [0, 1, 7_777, u32::MAX] {
            let mut f = Fetcher::new();
            f.sent(1, 0);
            f.finished(&FetchResult::Failed(error.clone()), 0, &c, jitter);
            assert!(!f.due(4_999, &c), "asked for 5 s ({jitter})");
            assert!(
                f.due(7_500, &c),
                "spread over at most half as long again ({jitter})"
            );
        }
        // A controller cannot hold the filter back past maxBackoff.
        let c = config(r#""pollInterval":"1s","maxBackoff":"2s""#);
        let mut f = Fetcher::new();
        f.sent(1, 0);
        let long = FetchError::RetryAfter {
            status: 503,
            after: Duration::from_secs(3600),
        };
        f.finished(&FetchResult::Failed(long), 0, &c, u32::MAX);
        assert!(f.due(3_000, &c));
    }

    #[test]
    fn back_off_doubles_with_jitter_up_to_the_cap() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(30));
        let low: Vec<u64> = (1..=7)
            .map(|n| backoff(n, base, max, 0).as_millis() as u64)
            .collect();
        assert_eq!(low, vec![500, 1_000, 2_000, 4_000, 8_000, 15_000, 15_000]);
        for n in 1..40 {
            for jitter in [0, 1, 7_777, u32::MAX] {
                let d = backoff(n, base, max, jitter);
                assert!(d <= max && d >= base / 2, "{n} {jitter}: {d:?}");
            }
        }
    }

    #[test]
    fn long_polls_follow_each_other_and_plain_polls_keep_their_interval() {
        let lp = config(r#""pollInterval":"1s","longPoll":"30s""#);
        let mut f = Fetcher::new();
        assert!(f.due(0, &lp));
        f.sent(1, 0);
        assert!(!f.due(100, &lp), "one fetch at a time");
        f.finished(&FetchResult::NotModified, 30_000, &lp, 0);
        assert!(
            f.due(30_000, &lp),
            "a long-poll that waited is renewed at once"
        );
        f.sent(2, 30_000);
        f.finished(&FetchResult::NotModified, 30_010, &lp, 0);
        assert!(
            !f.due(30_500, &lp),
            "a 304 that did not wait is not repeated at once"
        );
        assert!(f.due(31_000, &lp));

        let plain = config(r#""pollInterval":"2s","longPoll":0"#);
        let mut f = Fetcher::new();
        f.sent(1, 0);
        f.finished(&FetchResult::Updated, 50, &plain, 0);
        assert!(!f.due(1_999, &plain));
        assert!(f.due(2_000, &plain));
    }

    #[test]
    fn a_lost_callback_does_not_stop_fetching_forever() {
        let c = config(r#""longPoll":"10s""#);
        let mut f = Fetcher::new();
        f.sent(1, 0);
        assert!(!f.due(15_000, &c));
        assert!(f.due(20_000, &c));
        assert!(!f.is_current(1));
    }

    #[test]
    fn one_log_line_per_change_of_state() {
        let c = config("");
        let mut f = Fetcher::new();
        let change = f.finished(&failed(), 0, &c, 0);
        assert!(matches!(
            change,
            Some(Change::Failing(FetchError::Unreachable(_)))
        ));
        assert_eq!(f.finished(&failed(), 1, &c, 0), None);
        assert_eq!(f.finished(&failed(), 2, &c, 0), None);
        let other = FetchResult::Failed(FetchError::Status(500));
        assert!(
            f.finished(&other, 3, &c, 0).is_some(),
            "a new cause is news"
        );
        assert_eq!(
            f.finished(&FetchResult::NotModified, 4, &c, 0),
            Some(Change::Recovered { failures: 4 })
        );
        assert_eq!(f.finished(&FetchResult::Updated, 5, &c, 0), None);
        assert_eq!(f.failures(), 0);
    }

    #[test]
    fn failures_push_the_next_fetch_back() {
        let c = config(r#""pollInterval":"1s","maxBackoff":"4s""#);
        let mut f = Fetcher::new();
        let mut now = 0;
        let mut gaps = vec![];
        for _ in 0..5 {
            f.sent(1, now);
            f.finished(&failed(), now, &c, u32::MAX);
            let start = now;
            while !f.due(now, &c) {
                now += 10;
            }
            gaps.push(now - start);
        }
        // u32::MAX % (span+1) lands somewhere in [half, full]; all capped at 4s.
        assert!(gaps.iter().all(|&g| (500..=4_000).contains(&g)), "{gaps:?}");
        assert!(gaps[3] >= 2_000 && gaps[4] >= 2_000, "{gaps:?}");
    }
}
