//! The per-request decision, free of Envoy: header hygiene, where the request starts,
//! and what its answer says about the start. The proxy-wasm glue implements
//! [`RequestHost`] with hostcalls; tests implement it with [`mock::MockHost`].
//!
//! A request of a scheme whose start is the primary needs nothing: the route as Envoy
//! matched it already starts at group 0. A request that must start at group n gets the
//! route header set to `n`, and Envoy matches the route again: the rendered route for
//! that header value carries a chain of priority groups starting at n. From there the
//! router carries the request (retries, other instances, the next groups).

use crate::config::{FilterConfig, INTERNAL_HEADER_PREFIX};
use crate::pairs::Pairs;
use crate::start::{Starts, group_of};
use crate::table::{MAX_GROUPS, Table};

/// Request headers a client could use to steer Envoy's router: its retry and timeout
/// policy is detour's to set (DESIGN.md "Zero loss").
pub const ENVOY_STEERING_HEADERS: &[&str] = &[
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-hedge-on-per-try-timeout",
];

/// What the filter reads from and writes to Envoy for one request.
pub trait RequestHost {
    /// The Envoy cluster the matched route sends the request to (`xds.cluster_name`).
    fn route_cluster(&mut self) -> Option<String>;
    /// Every request header, as Envoy hands them over.
    fn request_headers(&mut self) -> Pairs;
    fn remove_request_header(&mut self, name: &str);
    fn set_request_header(&mut self, name: &str, value: &str);
}

/// Is `name` a header a downstream client may not send: one of detour's own, the route
/// header (configurable, so not always `x-detour-*`), or one steering Envoy's retries?
pub fn is_forbidden_header(name: &[u8], route_header: &str) -> bool {
    let starts_with = |prefix: &str| {
        name.get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
    };
    starts_with(INTERNAL_HEADER_PREFIX)
        || name.eq_ignore_ascii_case(route_header.as_bytes())
        || ENVOY_STEERING_HEADERS
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// Where one request starts, once decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    pub scheme: usize,
    pub group: usize,
    /// Passive detection looks at the answer.
    pub watched: bool,
}

/// What the request-headers phase did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestOutcome {
    /// Some client header was removed.
    pub stripped: bool,
    /// The request belongs to a scheme and was looked at.
    pub started: Option<Started>,
}

/// The request-headers phase. With `envoyRemovesClientHeaders` (as rendered), a quiet
/// [`Starts`] and no `sample` asked for, it makes no host call at all.
///
/// `sample`: watch this request's answer. The glue asks for one sample per tick of each
/// worker (at most ten requests a second per worker, whatever the load): enough to see a
/// start group fail (the router carried the request on, but only the answer tells),
/// while every other request costs no host call in the response phase.
pub fn on_request_headers(
    host: &mut impl RequestHost,
    config: &FilterConfig,
    table: Option<&Table>,
    starts: &Starts,
    sample: bool,
) -> RequestOutcome {
    let mut outcome = RequestOutcome::default();
    if !config.envoy_removes_client_headers {
        outcome.stripped = strip_client_headers(host, &config.route_header);
    }
    if starts.quiet() && !(sample && config.passive.enabled) {
        return outcome;
    }
    let Some(table) = table else {
        return outcome;
    };
    let Some(scheme) = host
        .route_cluster()
        .and_then(|cluster| table.scheme_index(&cluster))
    else {
        return outcome;
    };
    let start = starts.of(scheme);
    if let Some(label) = group_label(start.group).filter(|_| start.group > 0) {
        host.set_request_header(&config.route_header, label);
    }
    outcome.started = Some(Started {
        scheme,
        group: start.group,
        watched: sample && config.passive.enabled,
    });
    outcome
}

/// Removes every header a client may not send; true when there was one.
fn strip_client_headers(host: &mut impl RequestHost, route_header: &str) -> bool {
    let headers = host.request_headers();
    let mut stripped = false;
    for (name, _) in headers.iter() {
        if is_forbidden_header(name, route_header) {
            // Header names from Envoy's codecs are tokens (ASCII).
            if let Ok(name) = std::str::from_utf8(name) {
                host.remove_request_header(name);
                stripped = true;
            }
        }
    }
    stripped
}

/// The route header's value for a start at `group`: its decimal index, as a static
/// string so that setting it allocates nothing. `None` past [`MAX_GROUPS`], which tables
/// never hold.
pub fn group_label(group: usize) -> Option<&'static str> {
    const LABELS: [&str; MAX_GROUPS] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
    ];
    LABELS.get(group).copied()
}

/// A watched request was answered by `answered_by` (the Envoy cluster of the last
/// attempt, `xds.cluster_name` in the response phase). When that is a later group than
/// the start, every attempt on the start group failed: the start group's targets are
/// returned for ejection. An answer from the start group itself, whatever its status, is
/// the service's answer and ejects nothing.
pub fn failed_start<'t>(
    table: &'t Table,
    started: &Started,
    answered_by: &str,
) -> impl Iterator<Item = &'t str> {
    let scheme = table.schemes.get(started.scheme);
    let moved_on = scheme.is_some_and(|s| {
        let is_primary = table.scheme_index(answered_by) == Some(started.scheme);
        group_of(s, answered_by, is_primary).is_some_and(|g| g > started.group)
    });
    scheme
        .filter(|_| moved_on)
        .and_then(|s| s.groups.get(started.group))
        .into_iter()
        .flatten()
        .map(|t| t.envoy_cluster.as_str())
}

/// Watched answers in a row, per scheme, that came from a later group than their start
/// before this worker ejects the start group: one slow request that timed out on every
/// instance is the service's answer, not a dead cluster (DESIGN.md "Failure domains").
pub const STRIKES_TO_EJECT: u8 = 2;

/// What one worker's watched answers said, scheme by scheme.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Strikes {
    by_scheme: Vec<u8>,
}

impl Strikes {
    /// Records a watched answer of `scheme`: `moved_on` when a later group answered it.
    /// True when the start group is to be ejected now (and the count starts again).
    pub fn record(&mut self, scheme: usize, moved_on: bool) -> bool {
        if self.by_scheme.len() <= scheme {
            self.by_scheme.resize(scheme + 1, 0);
        }
        let Some(count) = self.by_scheme.get_mut(scheme) else {
            return false;
        };
        if !moved_on {
            *count = 0;
            return false;
        }
        *count = count.saturating_add(1);
        if *count >= STRIKES_TO_EJECT {
            *count = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
pub mod mock {
    //! A host that records what the filter asked and did.
    use super::*;

    #[derive(Default)]
    pub struct MockHost {
        pub route_cluster: Option<String>,
        pub headers: Vec<(String, String)>,
        /// Every host call, in order, by name.
        pub calls: Vec<&'static str>,
    }

    impl MockHost {
        pub fn routed_to(cluster: &str) -> MockHost {
            MockHost {
                route_cluster: Some(cluster.to_string()),
                ..MockHost::default()
            }
        }

        pub fn with_header(mut self, name: &str, value: &str) -> MockHost {
            self.headers.push((name.to_string(), value.to_string()));
            self
        }

        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    impl RequestHost for MockHost {
        fn route_cluster(&mut self) -> Option<String> {
            self.calls.push("route_cluster");
            self.route_cluster.clone()
        }

        fn request_headers(&mut self) -> Pairs {
            self.calls.push("request_headers");
            Pairs::from_pairs(
                self.headers
                    .iter()
                    .map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            )
        }

        fn remove_request_header(&mut self, name: &str) {
            self.calls.push("remove_request_header");
            self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        }

        fn set_request_header(&mut self, name: &str, value: &str) {
            self.calls.push("set_request_header");
            self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            self.headers.push((name.to_string(), value.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::mock::MockHost;
    use super::*;
    use crate::eject::Ejections;
    use crate::health::Health::{self, *};
    use crate::table::fixtures::*;
    use std::time::Duration;

    const EAST: &str = "detour|east|apps|foo";
    const WEST: &str = "detour|west|apps|foo";
    const SOUTH: &str = "detour|south|apps|foo";

    fn config(envoy_removes: bool) -> FilterConfig {
        let json = format!(r#"{{"cluster":"east","envoyRemovesClientHeaders":{envoy_removes}}}"#);
        FilterConfig::parse(json.as_bytes()).unwrap()
    }

    fn table3(east: Health, west: Health, south: Health) -> Table {
        Table::compile(table(vec![scheme(vec![
            vec![target("east", east)],
            vec![target("west", west)],
            vec![target("south", south)],
        ])]))
        .unwrap()
    }

    fn starts(t: &Table, e: &Ejections) -> Starts {
        Starts::compute(t, e, 1_000)
    }

    #[test]
    fn the_healthy_path_makes_no_host_call() {
        let t = table3(Healthy, Healthy, Healthy);
        let mut host = MockHost::routed_to(EAST);
        let out = on_request_headers(
            &mut host,
            &config(true),
            Some(&t),
            &starts(&t, &Ejections::default()),
            false,
        );
        assert_eq!(out, RequestOutcome::default());
        assert!(host.calls.is_empty(), "{:?}", host.calls);
        // Nor before any table arrived.
        let mut host = MockHost::routed_to(EAST);
        on_request_headers(&mut host, &config(true), None, &Starts::default(), false);
        assert!(host.calls.is_empty());
    }

    #[test]
    fn a_request_starts_at_the_first_healthy_group() {
        let t = table3(Unhealthy, Unhealthy, Healthy);
        let mut host = MockHost::routed_to(EAST);
        let out = on_request_headers(
            &mut host,
            &config(true),
            Some(&t),
            &starts(&t, &Ejections::default()),
            false,
        );
        assert_eq!(host.header("x-detour-route"), Some("2"));
        let started = out.started.unwrap();
        assert_eq!((started.scheme, started.group), (0, 2));
        // Only a sampled request's answer is looked at, failed over or not.
        assert!(!started.watched);
        assert_eq!(host.calls, ["route_cluster", "set_request_header"]);
    }

    #[test]
    fn a_sampled_request_is_watched_while_all_is_quiet() {
        let t = table3(Healthy, Healthy, Healthy);
        let quiet = starts(&t, &Ejections::default());
        let mut host = MockHost::routed_to(EAST);
        let out = on_request_headers(&mut host, &config(true), Some(&t), &quiet, true);
        assert_eq!(
            out.started,
            Some(Started {
                scheme: 0,
                group: 0,
                watched: true
            })
        );
        // It starts where the route sends it: one read, nothing written.
        assert_eq!(host.calls, ["route_cluster"]);
        // Passive detection off: no sampling.
        let off = FilterConfig::parse(
            br#"{"cluster":"east","envoyRemovesClientHeaders":true,"passive":{"enabled":false}}"#,
        )
        .unwrap();
        let mut host = MockHost::routed_to(EAST);
        on_request_headers(&mut host, &off, Some(&t), &quiet, true);
        assert!(host.calls.is_empty());
    }

    #[test]
    fn requests_of_no_scheme_are_left_alone_even_when_degraded() {
        let t = table3(Unhealthy, Healthy, Healthy);
        let mut host = MockHost::routed_to("detour|east|apps|other");
        let out = on_request_headers(
            &mut host,
            &config(true),
            Some(&t),
            &starts(&t, &Ejections::default()),
            false,
        );
        assert_eq!(out.started, None);
        assert_eq!(host.header("x-detour-route"), None);
    }

    #[test]
    fn a_request_during_an_ejection_starts_past_it_and_a_sample_is_watched() {
        let t = table3(Healthy, Healthy, Healthy);
        let mut e = Ejections::default();
        e.eject(
            EAST,
            0,
            Duration::from_millis(5_000),
            Duration::from_secs(60),
        );
        let mut host = MockHost::routed_to(EAST);
        let out = on_request_headers(&mut host, &config(true), Some(&t), &starts(&t, &e), true);
        assert_eq!(out.started.map(|s| (s.group, s.watched)), Some((1, true)));
        assert_eq!(host.header("x-detour-route"), Some("1"));
        // With passive detection off, nothing is watched.
        let off = FilterConfig::parse(
            br#"{"cluster":"east","envoyRemovesClientHeaders":true,"passive":{"enabled":false}}"#,
        )
        .unwrap();
        let out = on_request_headers(&mut host, &off, Some(&t), &starts(&t, &e), true);
        assert_eq!(out.started.map(|s| s.watched), Some(false));
    }

    #[test]
    fn clients_cannot_steer_the_route_nor_envoys_retries() {
        let t = table3(Healthy, Healthy, Healthy);
        let mut host = MockHost::routed_to(EAST)
            .with_header(":method", "POST")
            .with_header("X-Detour-Route", "2")
            .with_header("x-detour-via", "west")
            .with_header("x-envoy-retry-on", "5xx")
            .with_header("x-envoy-max-retries", "9")
            .with_header("x-envoy-upstream-rq-per-try-timeout-ms", "1")
            .with_header("x-envoy-original-path", "/kept")
            .with_header("accept", "*/*");
        let out = on_request_headers(
            &mut host,
            &config(false),
            Some(&t),
            &starts(&t, &Ejections::default()),
            false,
        );
        assert!(out.stripped);
        let left: Vec<&str> = host.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(left, [":method", "x-envoy-original-path", "accept"]);
        // Nothing to strip: nothing removed, one read.
        let mut host = MockHost::routed_to(EAST).with_header("accept", "*/*");
        let out = on_request_headers(
            &mut host,
            &config(false),
            Some(&t),
            &starts(&t, &Ejections::default()),
            false,
        );
        assert!(!out.stripped);
        assert_eq!(host.calls, ["request_headers"]);
    }

    #[test]
    fn only_an_answer_from_a_later_group_blames_the_start() {
        let t = table3(Healthy, Healthy, Healthy);
        let at = |group| Started {
            scheme: 0,
            group,
            watched: true,
        };
        let blamed = |s: Started, by: &str| failed_start(&t, &s, by).collect::<Vec<_>>();
        assert_eq!(blamed(at(0), WEST), [EAST]);
        assert_eq!(blamed(at(1), SOUTH), [WEST]);
        // Answered where it started (even a 503 the service chose): no one to blame.
        assert!(blamed(at(0), EAST).is_empty());
        assert!(blamed(at(1), WEST).is_empty());
        // Or by an earlier group, or by something unknown.
        assert!(blamed(at(1), EAST).is_empty());
        assert!(blamed(at(0), "elsewhere").is_empty());
    }

    #[test]
    fn one_answer_from_a_later_group_is_not_enough_two_in_a_row_are() {
        let mut s = Strikes::default();
        assert!(!s.record(3, true));
        // The start group answered in between: it is alive.
        assert!(!s.record(3, false));
        assert!(!s.record(3, true));
        assert!(s.record(3, true));
        // And the count starts again.
        assert!(!s.record(3, true));
        // Schemes are counted apart.
        assert!(!s.record(0, true));
    }

    #[test]
    fn group_labels_are_decimal() {
        assert_eq!(group_label(0), Some("0"));
        assert_eq!(group_label(3), Some("3"));
        assert_eq!(group_label(15), Some("15"));
        assert_eq!(group_label(MAX_GROUPS), None);
    }
}
