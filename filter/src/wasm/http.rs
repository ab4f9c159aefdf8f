//! The per-request filter: the glue between Envoy's HTTP callbacks and the pure decision
//! in [`crate::request`].
//!
//! Request headers: the worker's [`crate::start::Starts`] say whether anything is
//! degraded; when nothing is, the filter returns at once, with no host call (the cost of
//! an empty filter), but for one sampled request per worker and tick. Otherwise it finds
//! the request's scheme and sets the route header when the request must start past its
//! primary. Response headers of a sampled request: when a later group than the start
//! answered it, every attempt on the start group failed; two such answers in a row
//! ([`crate::request::Strikes`]) eject the start group's targets for every worker.
//!
//! Envoy's router does the rest: retries on other instances, the next groups, the body
//! and the answer streamed, trailers, HTTP/2 and upgrades.

use super::ejections;
use super::host;
use super::log;
use super::worker::{Snapshot, Worker};
use crate::pairs::Pairs;
use crate::request::{RequestHost, Started, failed_start, on_request_headers};
use crate::start::Starts;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};
use std::rc::Rc;

const CLUSTER_NAME: &[&str] = &["xds", "cluster_name"];
const RESPONSE_FLAGS: &[&str] = &["response", "flags"];

/// For VMs whose configuration failed: Envoy still asks for HTTP contexts.
pub struct PassThrough;

impl Context for PassThrough {}
impl HttpContext for PassThrough {}

pub struct Filter {
    worker: Rc<Worker>,
    /// A watched request: where it started, in which table.
    watching: Option<(Rc<Snapshot>, Started)>,
}

/// The request's side of Envoy, through hostcalls.
struct Envoy;

impl RequestHost for Envoy {
    fn route_cluster(&mut self) -> Option<String> {
        host::string_property(CLUSTER_NAME)
    }

    fn request_headers(&mut self) -> Pairs {
        host::header_map(MapType::HttpRequestHeaders)
    }

    fn remove_request_header(&mut self, name: &str) {
        host::set_header(MapType::HttpRequestHeaders, name, None);
    }

    fn set_request_header(&mut self, name: &str, value: &str) {
        host::set_header(MapType::HttpRequestHeaders, name, Some(value));
    }
}

impl Filter {
    pub fn new(worker: Rc<Worker>) -> Filter {
        Filter {
            worker,
            watching: None,
        }
    }
}

impl Context for Filter {}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let worker = &self.worker;
        // Before the first table: quiet (no allocation, no host call).
        let starts = worker.starts.get();
        let no_table = Starts::default();
        let starts = starts.as_deref().unwrap_or(&no_table);
        let sample = worker.sample.replace(false);
        let snapshot = if starts.quiet() && !sample {
            None
        } else {
            worker.snapshot.get()
        };
        let outcome = on_request_headers(
            &mut Envoy,
            &worker.config,
            snapshot.as_ref().map(|s| &s.table),
            starts,
            sample,
        );
        if outcome.stripped {
            worker.stats.headers_stripped.increment();
        }
        if let (Some(started), Some(snapshot)) = (outcome.started, snapshot) {
            if started.group > 0 {
                snapshot
                    .failover_counter(started.scheme, started.group)
                    .increment();
            }
            if started.watched {
                self.watching = Some((snapshot, started));
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some((snapshot, started)) = self.watching.take() else {
            return Action::Continue;
        };
        // The cluster of the attempt that answered (the router refreshes the route's
        // cluster on every retry), and whether the answer is one (Envoy's own answer to a
        // failure carries response flags: every attempt failed, which says nothing about
        // the start group in particular).
        let Some(answered_by) = host::string_property(CLUSTER_NAME) else {
            return Action::Continue;
        };
        let answered = host::u64_property(RESPONSE_FLAGS).unwrap_or(0) == 0;
        let blamed: Vec<&str> = failed_start(&snapshot.table, &started, &answered_by)
            .filter(|_| answered)
            .collect();
        let mut strikes = self.worker.strikes.take();
        let eject = strikes.record(started.scheme, !blamed.is_empty());
        self.worker.strikes.set(strikes);
        if !eject {
            return Action::Continue;
        }
        let mut ejected = false;
        for target in blamed {
            let now_ms = self.worker.now_ms();
            if let Some(span) = ejections::eject(&self.worker, target, now_ms) {
                ejected = true;
                self.worker.stats.ejections.increment();
                log::info(|| {
                    format!(
                        "detour: ejected {target} for {}ms (answered by {answered_by})",
                        span.as_millis()
                    )
                });
            }
        }
        if ejected {
            self.worker.recompute_starts(self.worker.clock_ms());
        }
        Action::Continue
    }
}
