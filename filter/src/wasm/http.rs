//! The per-request filter.
//!
//! Request headers: find the scheme of the route's cluster, keep detour's headers a
//! client sent out of the way, choose a target, and re-route by setting the route header
//! when the target is not the primary. Request body: keep a copy (up to the scheme's
//! `replay.maxBodyBytes`) while a replay may need it. Response headers: classify the
//! attempt; on a target failure eject the target for the whole Envoy, then replay the
//! request once to the next target, or answer 503 with `x-detour-reason`.
//!
//! What the healthy path costs is mostly hostcalls that return data: each is a call from
//! Envoy into the VM's allocator and back, what the V8 boundary charges most for. A
//! scheme's request makes two (the route's cluster, the request headers) and three that
//! return nothing (the ejections' stamp; with `envoyFlagsLocalReplies`, two absent
//! response headers instead of the status); a request of no scheme, with
//! `envoyRemovesClientHeaders`, one property read and one absent header.
//!
//! Envoy lets a filter read request headers only in their own phase (it drops the
//! filter's handle to them when the phase continues), so the request headers of a
//! scheme's request are kept from that phase for a possible replay, in the wire format
//! Envoy hands them over in (one buffer, no allocation per header).

use super::ejections;
use super::host;
use super::log;
use super::worker::{Snapshot, Worker};
use crate::attempt::{
    NoReplay, Outcome, UPSTREAM_SERVICE_TIME_HEADER, classify, classify_call, may_be_failure,
    may_replay,
};
use crate::config::{GATEWAY_FLAGS_HEADER, LOCAL_FLAGS_HEADER, REASON_HEADER, VIA_HEADER};
use crate::pairs::Pairs;
use crate::replay::{
    Body, gateway_authority, is_internal_header, parse_status, request_headers, response_headers,
    status_of,
};
use crate::route::{HealthView, plan, replay_target};
use crate::table::{Scheme, Target};
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
    /// Not a request of any scheme (or one that must not fail over, or passive
    /// detection is off): hands off.
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
    /// The target this attempt went to (ejected if it fails): group and index in it.
    target: (usize, usize),
    /// The name this Envoy's route knows the primary by (`detour|C|NS|NAME` as rendered,
    /// Istio's `outbound|PORT||...`): a replay to the primary goes there.
    route_cluster: String,
    /// The request headers as the client sent them (less detour's): Envoy does not let
    /// a filter read request headers after their phase, and a replay needs them.
    headers: Pairs,
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

    fn target(&self) -> Option<&Target> {
        let (group, index) = self.target;
        self.scheme()?.groups.get(group)?.get(index)
    }

    /// The Envoy cluster of the attempted target, by its name in the table.
    fn target_cluster(&self) -> &str {
        self.target().map_or("", |t| t.envoy_cluster.as_str())
    }

    fn method(&self) -> &str {
        self.headers.get_str(":method").unwrap_or_default()
    }
}

impl Filter {
    pub fn new(worker: Rc<Worker>) -> Filter {
        Filter {
            worker,
            state: State::Pass,
        }
    }

    /// The scheme whose primary the route sent this request to, with the route's
    /// cluster name; one property read, and none at all before a table arrived.
    fn scheme_of_route(&self) -> Option<(Rc<Snapshot>, usize, String)> {
        let snapshot = self.worker.snapshot.get()?;
        if snapshot.table.schemes.is_empty() {
            return None;
        }
        let route_cluster = host::string_property(CLUSTER_NAME)?;
        let index = snapshot.table.scheme_index(&route_cluster)?;
        Some((snapshot, index, route_cluster))
    }

    /// Removes every detour header in `headers` (all of the client's request headers),
    /// so a client cannot choose the route, except `x-detour-via` on an mTLS
    /// connection: that is a gateway of the federation telling us the request already
    /// crossed clusters. Returns the headers without the removed ones.
    fn strip_client_headers(&self, headers: Pairs) -> (Entry, Pairs) {
        let route_header = &self.worker.config.route_header;
        let internal = |name: &[u8]| is_internal_header(name, route_header);
        if !headers.iter().any(|(name, _)| internal(name)) {
            return (Entry::Clean, headers);
        }
        let (mut via, mut route_stripped) = (false, false);
        let kept = Pairs::from_pairs(headers.iter().filter(|(name, _)| {
            if !internal(name) {
                return true;
            }
            if name.eq_ignore_ascii_case(VIA_HEADER.as_bytes())
                && host::bool_property(CONNECTION_MTLS)
            {
                via = true;
                return true;
            }
            // Header names from Envoy's codecs are tokens (ASCII).
            if let Ok(name) = std::str::from_utf8(name) {
                host::set_header(MapType::HttpRequestHeaders, name, None);
            }
            route_stripped |= name.eq_ignore_ascii_case(route_header.as_bytes());
            false
        }));
        let stripped = kept.len() < headers.len();
        if stripped {
            self.worker.stats.headers_stripped.increment();
        }
        let entry = match (via, route_stripped, stripped) {
            (true, _, _) => Entry::CrossedAGateway,
            (_, true, _) => Entry::RouteStripped,
            (_, _, true) => Entry::Stripped,
            _ => Entry::Clean,
        };
        (entry, kept)
    }

    /// With `envoyRemovesClientHeaders`, the headers that steer the filter are checked
    /// one by one instead of reading them all: the route header on every request, and
    /// `x-detour-via` on a request of a scheme.
    fn check_steering_headers(&self, of_scheme: bool) -> Entry {
        let route_header = &self.worker.config.route_header;
        if host::header(MapType::HttpRequestHeaders, route_header).is_some() {
            host::set_header(MapType::HttpRequestHeaders, route_header, None);
            self.worker.stats.headers_stripped.increment();
            return Entry::RouteStripped;
        }
        if of_scheme && host::header(MapType::HttpRequestHeaders, VIA_HEADER).is_some() {
            if host::bool_property(CONNECTION_MTLS) {
                return Entry::CrossedAGateway;
            }
            host::set_header(MapType::HttpRequestHeaders, VIA_HEADER, None);
            self.worker.stats.headers_stripped.increment();
            return Entry::Stripped;
        }
        Entry::Clean
    }

    /// Chooses the target of a request of scheme `index`, re-routes when it is not the
    /// primary, and returns the attempt to watch (when passive detection is on).
    fn route(
        &self,
        snapshot: Rc<Snapshot>,
        index: usize,
        route_cluster: String,
        headers: Option<Pairs>,
        end_of_stream: bool,
    ) -> Option<Attempt> {
        let scheme = snapshot.table.schemes.get(index)?;
        let passive = self.worker.config.passive.enabled;
        let view = passive.then(|| ejections::current(&self.worker));
        let no_ejections = crate::eject::Ejections::default();
        // The clock is read only while some ejection may still run.
        let now_ms = match view.as_ref().and_then(|v| v.last_until_ms) {
            Some(until) if until > self.worker.clock_ms() => self.worker.now_ms(),
            _ => self.worker.clock_ms(),
        };
        let health = HealthView {
            ejections: view.as_ref().map_or(&no_ejections, |v| &v.ejections),
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
        if !passive {
            return None;
        }
        let group = plan.decision.group;
        let target = scheme
            .groups
            .get(group)?
            .iter()
            .position(|t| std::ptr::eq(t, plan.decision.target))?;
        // A scheme that replays no body need not keep one.
        let body = if scheme.replay.max_body_bytes == 0 && !end_of_stream {
            Body::TooLarge
        } else {
            Body::new(end_of_stream)
        };
        Some(Attempt {
            target: (group, target),
            route_cluster,
            headers: headers.unwrap_or_default(),
            body,
            failure: None,
            replayed_to: None,
            scheme: index,
            snapshot,
        })
    }

    /// The attempt ended in `outcome`, a target failure: eject, then replay or refuse.
    fn failed(&mut self, mut attempt: Box<Attempt>, outcome: Outcome) -> Action {
        let now_ms = self.worker.now_ms();
        self.eject(attempt.target_cluster(), outcome, now_ms);
        attempt.failure = Some(outcome);
        let Some(scheme) = attempt.scheme() else {
            return self.refuse(outcome, NoReplay::NoTarget);
        };
        if let Err(no) = may_replay(
            outcome,
            attempt.method(),
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
        let failed = attempt.target_cluster();
        let Some(next) = replay_target(scheme, failed, &health, self.worker.random()) else {
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
        if headers.to_text().is_none() {
            return self.refuse(outcome, NoReplay::HeadersNotText);
        }
        let body = attempt.body.complete().filter(|b| !b.is_empty());
        match host::dispatch(via, &headers, body, self.worker.config.replay_timeout) {
            Ok(token) => {
                log::debug(|| {
                    format!(
                        "detour: {} on {} ({}); replaying to {cluster}",
                        attempt.method(),
                        attempt.target_cluster(),
                        outcome.label()
                    )
                });
                attempt.replayed_to = Some(cluster);
                self.state = State::Replaying { attempt, token };
                Action::Pause
            }
            Err(status) => {
                log::warn(|| format!("detour: cannot replay to {cluster}: {status}"));
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
        let headers = Pairs::from_pairs([
            (REASON_HEADER.as_bytes(), reason.as_bytes()),
            (&b"content-type"[..], &b"text/plain"[..]),
        ]);
        if let Err(status) = host::respond(503, &headers, body.as_bytes()) {
            log::error(|| format!("detour: cannot answer the client: status {status}"));
            return Action::Continue;
        }
        Action::Pause
    }

    /// The replay's answer, or Envoy's report that there is none.
    fn replayed(&mut self, attempt: &Attempt, num_headers: usize, body_size: usize) {
        let outcome = attempt.failure.unwrap_or(Outcome::NotReached("unknown"));
        let replay_target = attempt.replayed_to.as_deref().unwrap_or_default();
        let headers = if num_headers == 0 {
            Pairs::default()
        } else {
            host::header_map(MapType::HttpCallResponseHeaders)
        };
        let Some(status) = status_of(&headers) else {
            log::debug(|| format!("detour: replay to {replay_target} got no answer"));
            self.worker.stats.replay_failed.increment();
            self.answer_503(&NoReplay::AlreadyReplayed.reason(outcome));
            return;
        };
        let gateway_flags = headers.get_str(GATEWAY_FLAGS_HEADER);
        let from_upstream = headers.get(UPSTREAM_SERVICE_TIME_HEADER).is_some();
        let second = classify_call(status, gateway_flags, from_upstream);
        if second.is_target_failure() {
            self.eject(replay_target, second, self.worker.now_ms());
            self.worker.stats.replay_failed.increment();
            self.answer_503(&NoReplay::AlreadyReplayed.reason(outcome));
            return;
        }
        let body = host::buffer(BufferType::HttpCallResponseBody, body_size).unwrap_or_default();
        self.worker.stats.replay_ok.increment();
        self.state = State::Answered;
        if let Err(e) = host::respond(status, &response_headers(&headers), &body) {
            log::error(|| format!("detour: cannot send the replayed answer: status {e}"));
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
        let config = &self.worker.config;
        let scheme = self.scheme_of_route();
        // All the headers are read when the filter must strip detour's headers itself,
        // or when a replay may need them; otherwise only those that steer the filter.
        let (entry, headers) = if !config.envoy_removes_client_headers
            || (scheme.is_some() && config.passive.enabled)
        {
            let (entry, headers) =
                self.strip_client_headers(host::header_map(MapType::HttpRequestHeaders));
            (entry, Some(headers))
        } else {
            (self.check_steering_headers(scheme.is_some()), None)
        };
        match entry {
            // Never failed over twice.
            Entry::CrossedAGateway => return Action::Continue,
            // Envoy matched the route with the client's header; removing it clears the
            // route cache, but `xds.cluster_name` still names the client's choice until
            // the router resolves the route again. The request goes where the route
            // without the header sends it (the primary), without failover.
            Entry::RouteStripped => return Action::Continue,
            Entry::Clean | Entry::Stripped => {}
        }
        if let Some((snapshot, index, route_cluster)) = scheme
            && let Some(attempt) =
                self.route(snapshot, index, route_cluster, headers, end_of_stream)
        {
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
                if self.worker.config.envoy_flags_local_replies {
                    // An answer of the service carries neither mark.
                    if host::header(MapType::HttpResponseHeaders, LOCAL_FLAGS_HEADER).is_some() {
                        // Meant for the filter, not for the client.
                        host::set_header(MapType::HttpResponseHeaders, LOCAL_FLAGS_HEADER, None);
                    } else if host::header(MapType::HttpResponseHeaders, GATEWAY_FLAGS_HEADER)
                        .is_none()
                    {
                        return Action::Continue;
                    }
                }
                let status = host::header(MapType::HttpResponseHeaders, ":status")
                    .and_then(|s| parse_status(&s))
                    .unwrap_or(0);
                if !may_be_failure(status) {
                    return Action::Continue;
                }
                let flags = host::u64_property(RESPONSE_FLAGS).unwrap_or(0);
                let gateway_flags =
                    host::header(MapType::HttpResponseHeaders, GATEWAY_FLAGS_HEADER)
                        .and_then(|v| String::from_utf8(v).ok());
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
