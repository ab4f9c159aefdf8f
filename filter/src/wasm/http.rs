//! The per-request filter.
//!
//! Request headers: strip detour's headers a client sent, look up the scheme of the
//! route's cluster, choose a target, and re-route by setting the route header when the
//! target is not the primary. Request body: keep a copy (up to the scheme's
//! `replay.maxBodyBytes`) while a replay may need it. Response headers: classify the
//! attempt; on a target failure eject the target for the whole Envoy, then replay the
//! request once to the next target, or answer 503 with `x-detour-reason`.
//!
//! Envoy lets a filter read request headers only in their own phase (it drops the
//! filter's handle to them when the phase continues), so the request headers of a
//! scheme's request are kept from that phase for a possible replay. They were read
//! anyway (to strip detour's headers), so the healthy path adds no hostcall, only the
//! memory of the list while the request lives.

use super::ejections;
use super::host;
use super::log;
use super::worker::{Snapshot, Worker};
use crate::attempt::{
    NoReplay, Outcome, UPSTREAM_SERVICE_TIME_HEADER, classify, classify_call, may_be_failure,
    may_replay,
};
use crate::config::{GATEWAY_FLAGS_HEADER, REASON_HEADER, VIA_HEADER};
use crate::replay::{
    Body, gateway_authority, is_internal_header, request_headers, response_headers, status_of,
};
use crate::route::{HealthView, plan, replay_target};
use crate::table::Scheme;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};
use std::rc::Rc;

const CLUSTER_NAME: &[&str] = &["xds", "cluster_name"];
const RESPONSE_FLAGS: &[&str] = &["response", "flags"];
const CONNECTION_MTLS: &[&str] = &["connection", "mtls"];

/// For VMs whose configuration failed: Envoy still asks for HTTP contexts.
pub struct PassThrough;

impl Context for PassThrough {}
impl HttpContext for PassThrough {}

pub struct Filter {
    worker: Rc<Worker>,
    state: State,
}

/// What the request carried in detour's headers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entry {
    Clean,
    /// Some `x-detour-*` header was removed (not the route header).
    Stripped,
    /// The route header was removed.
    RouteStripped,
    /// `x-detour-via` over mTLS: the request already crossed a gateway.
    CrossedAGateway,
}

enum State {
    /// Not a request of any scheme (or one that must not fail over): hands off.
    Pass,
    /// Sent to a target of a scheme; watching how the attempt ends.
    Routed(Box<Attempt>),
    /// The attempt failed; the response is paused while the replay call is out.
    Replaying { attempt: Box<Attempt>, token: u32 },
    /// The filter answered the client itself; its own reply passes untouched.
    Answered,
}

struct Attempt {
    snapshot: Rc<Snapshot>,
    scheme: usize,
    /// Envoy cluster this attempt went to (ejected if it fails).
    target: String,
    /// The name this Envoy's route knows the primary by (`detour|C|NS|NAME` as rendered,
    /// Istio's `outbound|PORT||...`): a replay to the primary goes there.
    route_cluster: String,
    method: String,
    /// The request headers as the client sent them (less detour's): Envoy does not let
    /// a filter read request headers after their phase, and a replay needs them.
    headers: Vec<(String, String)>,
    body: Body,
    /// The outcome of the failed first attempt, once known.
    failure: Option<Outcome>,
    /// Envoy cluster of the replay, once sent.
    replayed_to: Option<String>,
}

impl Attempt {
    fn scheme(&self) -> Option<&Scheme> {
        self.snapshot.table.schemes.get(self.scheme)
    }
}

impl Filter {
    pub fn new(worker: Rc<Worker>) -> Filter {
        Filter {
            worker,
            state: State::Pass,
        }
    }

    /// Removes every detour header a client sent (so it cannot choose the route), except
    /// `x-detour-via` on an mTLS connection: that is a gateway of the federation telling
    /// us the request already crossed clusters. `headers` is left without them.
    fn strip_client_headers(&self, headers: &mut Vec<(String, String)>) -> Entry {
        let route_header = &self.worker.config.route_header;
        let (mut via, mut stripped, mut route_stripped) = (false, false, false);
        headers.retain(|(name, _)| {
            if !is_internal_header(name, route_header) {
                return true;
            }
            if name.eq_ignore_ascii_case(VIA_HEADER) && host::bool_property(CONNECTION_MTLS) {
                via = true;
                return true;
            }
            host::set_header(MapType::HttpRequestHeaders, name, None);
            stripped = true;
            route_stripped |= name.eq_ignore_ascii_case(route_header);
            false
        });
        if stripped {
            self.worker.stats.headers_stripped.increment();
        }
        match (via, route_stripped, stripped) {
            (true, _, _) => Entry::CrossedAGateway,
            (_, true, _) => Entry::RouteStripped,
            (_, _, true) => Entry::Stripped,
            _ => Entry::Clean,
        }
    }

    fn route(&self, headers: Vec<(String, String)>, end_of_stream: bool) -> Option<Attempt> {
        let snapshot = self.worker.snapshot.get()?;
        if snapshot.table.schemes.is_empty() {
            return None;
        }
        let route_cluster = host::string_property(CLUSTER_NAME)?;
        let index = snapshot.table.scheme_index(&route_cluster)?;
        let scheme = snapshot.table.schemes.get(index)?;
        let now_ms = host::now_ms();
        let ejections = ejections::current(&self.worker);
        let health = HealthView {
            ejections: &ejections.ejections,
            now_ms,
        };
        let plan = plan(scheme, &route_cluster, &health, self.worker.random())?;
        if let Some(cluster) = plan.reroute {
            host::set_header(
                MapType::HttpRequestHeaders,
                &self.worker.config.route_header,
                Some(cluster),
            );
        }
        if plan.decision.is_failover() {
            snapshot
                .failover_counter(index, plan.decision.group)
                .increment();
        }
        let target = plan.attempted().to_string();
        let method = headers
            .iter()
            .find(|(n, _)| n == ":method")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        // A scheme that replays no body need not keep one.
        let body = if scheme.replay.max_body_bytes == 0 && !end_of_stream {
            Body::TooLarge
        } else {
            Body::new(end_of_stream)
        };
        Some(Attempt {
            snapshot,
            scheme: index,
            target,
            route_cluster,
            method,
            headers,
            body,
            failure: None,
            replayed_to: None,
        })
    }

    /// The attempt ended in `outcome`, a target failure: eject, then replay or refuse.
    fn failed(&mut self, mut attempt: Box<Attempt>, outcome: Outcome) -> Action {
        let now_ms = host::now_ms();
        self.eject(&attempt.target, outcome, now_ms);
        attempt.failure = Some(outcome);
        let Some(scheme) = attempt.scheme() else {
            return self.refuse(outcome, NoReplay::NoTarget);
        };
        if let Err(no) = may_replay(
            outcome,
            &attempt.method,
            &scheme.replay,
            attempt.body.complete().is_some(),
            false,
        ) {
            return self.refuse(outcome, no);
        }
        let ejections = ejections::current(&self.worker);
        let health = HealthView {
            ejections: &ejections.ejections,
            now_ms,
        };
        let Some(next) = replay_target(scheme, &attempt.target, &health, self.worker.random())
        else {
            return self.refuse(outcome, NoReplay::NoTarget);
        };
        let cluster = next.target.envoy_cluster.clone();
        // The primary under the name the route used (under Istio it has no other); any
        // other target is in another cluster, behind a gateway that routes by
        // NAME.NAMESPACE whatever name the client used.
        let to_primary = scheme
            .primary()
            .is_some_and(|p| std::ptr::eq(p, next.target));
        let (via, authority) = if to_primary {
            (attempt.route_cluster.as_str(), None)
        } else {
            (cluster.as_str(), gateway_authority(&next.target.service))
        };
        let headers = request_headers(
            &attempt.headers,
            &self.worker.config.route_header,
            authority.as_deref(),
        );
        let body = attempt.body.complete().filter(|b| !b.is_empty());
        match host::dispatch(via, headers, body, self.worker.config.replay_timeout) {
            Ok(token) => {
                log::debug(|| {
                    format!(
                        "detour: {} on {} ({}); replaying to {cluster}",
                        attempt.method,
                        attempt.target,
                        outcome.label()
                    )
                });
                attempt.replayed_to = Some(cluster);
                self.state = State::Replaying { attempt, token };
                Action::Pause
            }
            Err(status) => {
                log::warn(|| format!("detour: cannot replay to {cluster}: {status:?}"));
                self.worker.stats.replay_failed.increment();
                self.answer_503(&NoReplay::AlreadyReplayed.reason(outcome))
            }
        }
    }

    fn eject(&self, target: &str, outcome: Outcome, now_ms: u64) {
        if let Some(span) = ejections::eject(&self.worker, target, now_ms) {
            self.worker.stats.ejections.increment();
            log::info(|| {
                format!(
                    "detour: ejected {target} for {}ms ({})",
                    span.as_millis(),
                    outcome.label()
                )
            });
        }
    }

    fn refuse(&mut self, outcome: Outcome, why: NoReplay) -> Action {
        self.worker.stats.replay_refused.increment();
        self.answer_503(&why.reason(outcome))
    }

    /// Answers 503 with `x-detour-reason`; the failed upstream answer is dropped.
    fn answer_503(&mut self, reason: &str) -> Action {
        self.state = State::Answered;
        let body = format!("detour: {reason}\n");
        let headers = vec![(REASON_HEADER, reason), ("content-type", "text/plain")];
        if let Err(status) = host::respond(503, headers, body.as_bytes()) {
            log::error(|| format!("detour: cannot answer the client: {status:?}"));
            return Action::Continue;
        }
        Action::Pause
    }

    /// The replay's answer, or Envoy's report that there is none.
    fn replayed(&mut self, attempt: &Attempt, num_headers: usize, body_size: usize) {
        let outcome = attempt.failure.unwrap_or(Outcome::NotReached("unknown"));
        let replay_target = attempt.replayed_to.as_deref().unwrap_or_default();
        let headers = if num_headers == 0 {
            Vec::new()
        } else {
            host::headers(MapType::HttpCallResponseHeaders)
        };
        let Some(status) = status_of(&headers) else {
            log::debug(|| format!("detour: replay to {replay_target} got no answer"));
            self.worker.stats.replay_failed.increment();
            self.answer_503(&NoReplay::AlreadyReplayed.reason(outcome));
            return;
        };
        let gateway_flags = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(GATEWAY_FLAGS_HEADER))
            .map(|(_, v)| v.as_str());
        let from_upstream = headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(UPSTREAM_SERVICE_TIME_HEADER));
        let second = classify_call(status, gateway_flags, from_upstream);
        if second.is_target_failure() {
            self.eject(replay_target, second, host::now_ms());
            self.worker.stats.replay_failed.increment();
            self.answer_503(&NoReplay::AlreadyReplayed.reason(outcome));
            return;
        }
        let body = host::buffer(BufferType::HttpCallResponseBody, body_size).unwrap_or_default();
        self.worker.stats.replay_ok.increment();
        self.state = State::Answered;
        if let Err(e) = host::respond(status, response_headers(&headers), &body) {
            log::error(|| format!("detour: cannot send the replayed answer: {e:?}"));
            let _ = proxy_wasm::hostcalls::resume_http_response();
        }
    }
}

impl Context for Filter {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        match std::mem::replace(&mut self.state, State::Answered) {
            State::Replaying { attempt, token } if token == token_id => {
                self.replayed(&attempt, num_headers, body_size)
            }
            other => self.state = other,
        }
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let mut headers = host::headers(MapType::HttpRequestHeaders);
        match self.strip_client_headers(&mut headers) {
            // Never failed over twice.
            Entry::CrossedAGateway => return Action::Continue,
            // Envoy matched the route with the client's header; removing it clears the
            // route cache, but `xds.cluster_name` still names the client's choice until
            // the router resolves the route again. The request goes where the route
            // without the header sends it (the primary), without failover.
            Entry::RouteStripped => return Action::Continue,
            Entry::Clean | Entry::Stripped => {}
        }
        if let Some(attempt) = self.route(headers, end_of_stream) {
            self.state = State::Routed(Box::new(attempt));
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let State::Routed(attempt) = &mut self.state
            && let Body::Receiving(_) = attempt.body
        {
            let limit = attempt.scheme().map_or(0, |s| s.replay.max_body_bytes);
            if attempt.body.accepts(body_size, limit) {
                let chunk = host::buffer(BufferType::HttpRequestBody, body_size);
                attempt.body.push(chunk, end_of_stream, limit);
            } else {
                attempt.body.give_up();
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match std::mem::replace(&mut self.state, State::Pass) {
            State::Routed(attempt) => {
                let status = host::header(MapType::HttpResponseHeaders, ":status")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if !may_be_failure(status) {
                    return Action::Continue;
                }
                let flags = host::u64_property(RESPONSE_FLAGS).unwrap_or(0);
                let gateway_flags =
                    host::header(MapType::HttpResponseHeaders, GATEWAY_FLAGS_HEADER);
                let outcome = classify(flags, status, gateway_flags.as_deref());
                if outcome.is_target_failure() {
                    self.failed(attempt, outcome)
                } else {
                    Action::Continue
                }
            }
            State::Replaying { attempt, token } => {
                self.state = State::Replaying { attempt, token };
                Action::Pause
            }
            other => {
                self.state = other;
                Action::Continue
            }
        }
    }

    fn on_http_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        // While a replay is out, the failed answer must not reach the client.
        match self.state {
            State::Replaying { .. } => Action::Pause,
            _ => Action::Continue,
        }
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        match self.state {
            State::Replaying { .. } => Action::Pause,
            _ => Action::Continue,
        }
    }
}
