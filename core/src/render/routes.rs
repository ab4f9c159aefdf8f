//! The routes of the ingress: for a scheme's primary, one route per start group and
//! method class, each carrying the chain of priority groups Envoy's router walks from
//! there ([`detour_filter::chain`]); for any other service, a route that retries on
//! another instance.
//!
//! The filter picks the start by setting the route header to the group's index (no
//! header: the primary). Routes are matched in order, so the header routes come first.

use crate::model::{Scheme, ServiceName, TargetRef};
use detour_filter::chain::{Methods, RetryPolicy, attempts, retry_policy};
use detour_filter::config::GATEWAY_FLAGS_HEADER;
use serde_norway::Value;
use std::time::Duration;

/// Whole-request timeout of the ingress and gateway routes.
const ROUTE_TIMEOUT: &str = "15s";
/// Pause before a retry: short, since a retry goes to another host or cluster rather
/// than back to the one that just failed.
const RETRY_BASE_INTERVAL: &str = "0.002s";
const RETRY_MAX_INTERVAL: &str = "0.02s";
/// Host selections a retry may redo to avoid the hosts already tried.
const HOST_SELECTION_ATTEMPTS: u32 = 5;

/// The ingress routes of `scheme`'s primary, whose Envoy cluster here is `primary`:
/// header routes for starts 1..n, then the default route (start 0). `hosts[g]`: how many
/// instances group g's clusters have (endpoints of the primary, gateway instances).
pub fn scheme_routes(
    scheme: &Scheme,
    primary: &str,
    hosts: &[usize],
    route_header: &str,
) -> Vec<Value> {
    let groups = group_clusters(scheme, primary);
    let mut routes = Vec::new();
    for start in (0..groups.len()).rev() {
        let header = (start > 0).then_some(start);
        if !scheme.replay.methods.is_empty() {
            routes.push(chain_route(
                scheme,
                &groups,
                &attempts(hosts, start),
                (route_header, header),
                Methods::Replayable,
            ));
        }
        routes.push(chain_route(
            scheme,
            &groups,
            &attempts(hosts, start),
            (route_header, header),
            Methods::Other,
        ));
    }
    routes
}

/// The route of a service no scheme protects: another instance on a failure that never
/// reached one.
pub fn local_route(envoy_cluster: &str) -> Value {
    let policy = retry_policy(2, Methods::Other, None);
    map! {
        "match" => map! { "prefix" => "/" },
        "route" => map! {
            "cluster" => envoy_cluster,
            "timeout" => ROUTE_TIMEOUT,
            "retry_policy" => retry(&policy, false),
        },
    }
}

/// What the gateway may do again for a request to one of its services: the methods
/// every scheme naming the service replays, and how long an instance may hang before
/// the gateway asks another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayReplay {
    pub methods: Vec<String>,
    pub per_try_timeout: Duration,
    pub max_body_bytes: u64,
}

impl GatewayReplay {
    /// For a service that `schemes` name (as primary or target): the methods all of
    /// them replay, and half the shortest `replay.perTryTimeout` — so that the gateway's
    /// second instance answers inside the attempt the calling Envoy waits for. `None`
    /// when no method is replayed by all, or no scheme bounds an attempt.
    pub fn of<'a>(schemes: impl IntoIterator<Item = &'a Scheme>) -> Option<GatewayReplay> {
        let mut schemes = schemes.into_iter().peekable();
        let first = schemes.peek()?;
        let mut methods = first.replay.methods.clone();
        let mut per_try: Option<Duration> = None;
        let mut max_body_bytes = first.replay.max_body_bytes;
        for scheme in schemes {
            methods.retain(|m| scheme.replay.methods.contains(m));
            max_body_bytes = max_body_bytes.min(scheme.replay.max_body_bytes);
            if let Some(t) = scheme.replay.per_try_timeout {
                per_try = Some(per_try.map_or(t, |p| p.min(t)));
            }
        }
        let per_try_timeout = per_try? / 2;
        (!methods.is_empty() && !per_try_timeout.is_zero()).then_some(GatewayReplay {
            methods,
            per_try_timeout,
            max_body_bytes,
        })
    }
}

/// The header a calling Envoy's cluster for a remote target adds to every request it
/// sends to that cluster's gateway: the target's `NAME.NAMESPACE`. The gateway routes by
/// it (and gives the service that authority), so a target may be another service than
/// the one the client called. Clients cannot send it: the ingress removes every
/// `x-detour-*` header on entry, and the gateway takes requests only from the
/// federation's Envoys.
pub const TARGET_HEADER: &str = "x-detour-target";

/// How a gateway recognises the requests for one of its services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayMatch {
    /// By [`TARGET_HEADER`], as a calling Envoy's failover sends them; the authority is
    /// rewritten to the service's own.
    TargetHeader,
    /// By the authority `NAME.NAMESPACE` (any port): health checks, and callers that do
    /// not set the header (e.g. Istio's clusters for the gateways).
    Authority,
}

/// The gateway's routes to `service` of its cluster (Envoy cluster `envoy_cluster`):
/// another instance on a connect failure, whatever the method (the request has not
/// reached any); and, for the methods `replay` names, also after a reset or an
/// instance that hangs past the per-try timeout — a frozen or dying instance behind the
/// gateway is one instance, not the service, and the gateway is the one that can try
/// the next (the calling Envoy's retry would come back to this gateway with no say over
/// which instance answers).
pub fn gateway_routes(
    service: &ServiceName,
    envoy_cluster: &str,
    replay: Option<&GatewayReplay>,
    by: GatewayMatch,
) -> Vec<Value> {
    let authority = service.authority();
    let identity = match by {
        GatewayMatch::TargetHeader => map! {
            "name" => TARGET_HEADER,
            "string_match" => map! { "exact" => authority.clone() },
        },
        GatewayMatch::Authority => map! {
            "name" => ":authority",
            "string_match" => map! {
                "safe_regex" => map! {
                    "regex" => format!("^{}(:[0-9]+)?$", authority.replace('.', "\\.")),
                },
            },
        },
    };
    let route = |methods: Option<&[String]>, retry: Value| {
        let mut headers = vec![identity.clone()];
        headers.extend(methods.map(method_matcher));
        let mut action = map! {
            "cluster" => envoy_cluster,
            "timeout" => ROUTE_TIMEOUT,
            "retry_policy" => retry,
        };
        if let (GatewayMatch::TargetHeader, Value::Mapping(m)) = (by, &mut action) {
            m.insert(
                Value::from("host_rewrite_literal"),
                Value::from(authority.clone()),
            );
        }
        let mut route = map! {
            "match" => map! { "prefix" => "/", "headers" => headers },
            "route" => action,
        };
        if let Value::Mapping(m) = &mut route {
            if by == GatewayMatch::TargetHeader {
                m.insert(
                    Value::from("request_headers_to_remove"),
                    Value::from(vec![TARGET_HEADER]),
                );
            }
            if let Some(replay) = replay.filter(|_| methods.is_some()) {
                m.insert(
                    Value::from("request_body_buffer_limit"),
                    Value::from(replay.max_body_bytes),
                );
            }
        }
        route
    };
    let never_reached = route(
        None,
        map! {
            "retry_on" => "connect-failure,refused-stream",
            "num_retries" => 2,
            "retry_host_predicate" => vec![previous_hosts()],
            "host_selection_retry_max_attempts" => HOST_SELECTION_ATTEMPTS,
            "retry_back_off" => back_off(),
        },
    );
    let Some(replay) = replay else {
        return vec![never_reached];
    };
    let replayable = route(
        Some(&replay.methods),
        map! {
            "retry_on" => "connect-failure,refused-stream,reset",
            "num_retries" => 2,
            "per_try_timeout" => seconds(replay.per_try_timeout),
            "retry_host_predicate" => vec![previous_hosts()],
            "host_selection_retry_max_attempts" => HOST_SELECTION_ATTEMPTS,
            "retry_back_off" => back_off(),
        },
    );
    vec![replayable, never_reached]
}

fn method_matcher(methods: &[String]) -> Value {
    map! {
        "name" => ":method",
        "string_match" => map! {
            "safe_regex" => map! { "regex" => format!("^({})$", methods.join("|")) },
        },
    }
}

/// Each group's Envoy clusters with their weights; group 0 is the primary as routed here.
fn group_clusters(scheme: &Scheme, primary: &str) -> Vec<Vec<(String, u32)>> {
    let remote = |t: &TargetRef| t.envoy_cluster();
    std::iter::once(vec![(primary.to_string(), 1)])
        .chain(scheme.groups.iter().map(|group| {
            group
                .iter()
                .map(|w| (remote(&w.target), w.weight.max(1)))
                .collect()
        }))
        .collect()
}

fn chain_route(
    scheme: &Scheme,
    groups: &[Vec<(String, u32)>],
    chain: &[usize],
    (route_header, header): (&str, Option<usize>),
    methods: Methods,
) -> Value {
    let start = chain.first().copied().unwrap_or_default();
    let policy = retry_policy(chain.len(), methods, scheme.replay.per_try_timeout);
    let priority_groups: Vec<Value> = chain
        .iter()
        .filter_map(|&g| {
            let clusters: Vec<Value> = groups
                .get(g)?
                .iter()
                .map(|(name, weight)| map! { "cluster_name" => name.clone(), "weight" => *weight })
                .collect();
            Some(map! { "name" => format!("group-{g}"), "clusters" => clusters })
        })
        .collect();
    let mut matchers = Vec::new();
    if let Some(start) = header {
        matchers.push(map! {
            "name" => route_header,
            "string_match" => map! { "exact" => start.to_string() },
        });
    }
    if methods == Methods::Replayable {
        matchers.push(method_matcher(&scheme.replay.methods));
    }
    let mut route_match = map! { "prefix" => "/" };
    if let Value::Mapping(m) = &mut route_match
        && !matchers.is_empty()
    {
        m.insert(Value::from("headers"), Value::Sequence(matchers));
    }
    map! {
        "name" => format!("{}|start-{start}|{}", scheme.id(), match methods {
            Methods::Replayable => "replayable",
            Methods::Other => "other",
        }),
        "match" => route_match,
        "route" => map! {
            "inline_cluster_specifier_plugin" => map! {
                "extension" => map! {
                    "name" => "envoy.router.cluster_specifier_plugin.priority_group",
                    "typed_config" => map! {
                        "@type" => "type.googleapis.com/envoy.extensions.router.cluster_specifiers.priority_group.v3.PriorityGroupClusterSpecifier",
                        "priority_groups" => priority_groups,
                    },
                },
            },
            "timeout" => ROUTE_TIMEOUT,
            "retry_policy" => retry(&policy, true),
        },
        // Envoy keeps this much of the body for a retry; a larger request goes once.
        "request_body_buffer_limit" => scheme.replay.max_body_bytes,
        // Routing is done: neither a gateway nor a service has any use for it.
        "request_headers_to_remove" => vec![route_header],
    }
}

fn retry(policy: &RetryPolicy, refresh_cluster: bool) -> Value {
    let mut retry = map! {
        "retry_on" => policy.retry_on,
        "num_retries" => policy.num_retries,
        "retry_host_predicate" => vec![previous_hosts()],
        "host_selection_retry_max_attempts" => HOST_SELECTION_ATTEMPTS,
        "retriable_headers" => vec![map! {
            "name" => GATEWAY_FLAGS_HEADER,
            "string_match" => map! {
                "safe_regex" => map! { "regex" => policy.gateway_flags_regex },
            },
        }],
        "retry_back_off" => back_off(),
    };
    if let Value::Mapping(m) = &mut retry {
        if refresh_cluster {
            // The next attempt's cluster comes from the next priority group.
            m.insert(Value::from("refresh_cluster_on_retry"), Value::from(true));
        }
        if let Some(timeout) = policy.per_try_timeout {
            m.insert(
                Value::from("per_try_timeout"),
                Value::from(seconds(timeout)),
            );
        }
    }
    retry
}

fn previous_hosts() -> Value {
    map! {
        "name" => "envoy.retry_host_predicates.previous_hosts",
        "typed_config" => map! {
            "@type" => "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
        },
    }
}

fn back_off() -> Value {
    map! { "base_interval" => RETRY_BASE_INTERVAL, "max_interval" => RETRY_MAX_INTERVAL }
}

/// A protobuf JSON duration.
fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::example_model;

    fn routes() -> Vec<Value> {
        let model = example_model();
        let scheme = model.scheme_for_primary("east", &model.schemes[0].primary.service);
        scheme_routes(
            scheme.unwrap(),
            "detour|east|apps|foo",
            &[2, 1, 1],
            "x-detour-route",
        )
    }

    fn chain(route: &Value) -> Vec<Vec<&str>> {
        route["route"]["inline_cluster_specifier_plugin"]["extension"]["typed_config"]
            ["priority_groups"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|g| {
                g["clusters"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|c| c["cluster_name"].as_str().unwrap())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn each_start_has_its_chain_and_the_default_route_comes_last() {
        let r = routes();
        // The example: east, then west, then south; replayable and other methods.
        assert_eq!(r.len(), 6);
        let last = &r[5];
        assert_eq!(last["match"].get("headers"), None);
        assert_eq!(
            chain(last),
            [
                ["detour|east|apps|foo"],
                ["detour|east|apps|foo"],
                ["detour|west|apps|foo"],
                ["detour|south|apps|foo"],
            ]
        );
        assert_eq!(
            last["route"]["retry_policy"]["num_retries"].as_u64(),
            Some(3)
        );
        let first = &r[0];
        assert_eq!(
            first["match"]["headers"][0]["name"].as_str(),
            Some("x-detour-route")
        );
        assert_eq!(
            first["match"]["headers"][0]["string_match"]["exact"].as_str(),
            Some("2")
        );
        // Past the primary, and back to the groups it skipped at the end.
        assert_eq!(
            chain(first),
            [
                ["detour|south|apps|foo"],
                ["detour|east|apps|foo"],
                ["detour|east|apps|foo"],
                ["detour|west|apps|foo"],
            ]
        );
        assert_eq!(
            first["route"]["retry_policy"]["num_retries"].as_u64(),
            Some(3)
        );
    }

    #[test]
    fn only_replayable_methods_go_on_after_a_reset() {
        let r = routes();
        let replayable = &r[4];
        let other = &r[5];
        assert_eq!(
            replayable["match"]["headers"][0]["string_match"]["safe_regex"]["regex"].as_str(),
            Some("^(GET|HEAD|OPTIONS|PUT|DELETE)$")
        );
        assert!(
            replayable["route"]["retry_policy"]["retry_on"]
                .as_str()
                .unwrap()
                .contains("reset")
        );
        assert!(
            !other["route"]["retry_policy"]["retry_on"]
                .as_str()
                .unwrap()
                .contains("reset")
        );
        for route in [replayable, other] {
            let retry = &route["route"]["retry_policy"];
            assert_eq!(retry["refresh_cluster_on_retry"].as_bool(), Some(true));
            assert_eq!(
                retry["retry_host_predicate"][0]["name"].as_str(),
                Some("envoy.retry_host_predicates.previous_hosts")
            );
            assert_eq!(
                retry["retriable_headers"][0]["name"].as_str(),
                Some("x-detour-gateway-flags")
            );
            assert_eq!(route["request_body_buffer_limit"].as_u64(), Some(65536));
        }
    }

    #[test]
    fn a_gateway_asks_another_instance_for_what_every_scheme_naming_the_service_replays() {
        let model = example_model();
        let mut strict = model.schemes[0].clone();
        // No scheme bounds an attempt: the gateway waits for the instance it chose.
        assert_eq!(GatewayReplay::of([&strict]), None);
        strict.replay.per_try_timeout = Some(Duration::from_millis(800));
        let mut loose = strict.clone();
        loose.replay.methods = vec!["GET".into(), "PUT".into()];
        loose.replay.per_try_timeout = Some(Duration::from_millis(400));
        loose.replay.max_body_bytes = 1024;
        let replay = GatewayReplay::of([&strict, &loose]).unwrap();
        assert_eq!(replay.methods, ["GET", "PUT"]);
        // Half the shortest: the second instance answers inside the caller's attempt.
        assert_eq!(replay.per_try_timeout, Duration::from_millis(200));
        assert_eq!(replay.max_body_bytes, 1024);
        loose.replay.methods = vec!["POST".into()];
        assert_eq!(
            GatewayReplay::of([&strict, &loose]),
            None,
            "no method in common"
        );

        let foo = ServiceName::new("apps", "foo");
        let routes = gateway_routes(
            &foo,
            "detour|west|apps|foo",
            Some(&replay),
            GatewayMatch::Authority,
        );
        assert_eq!(routes.len(), 2);
        let (replayable, other) = (&routes[0], &routes[1]);
        assert_eq!(
            replayable["match"]["headers"][1]["string_match"]["safe_regex"]["regex"].as_str(),
            Some("^(GET|PUT)$")
        );
        let retry = &replayable["route"]["retry_policy"];
        assert!(retry["retry_on"].as_str().unwrap().contains("reset"));
        assert_eq!(retry["per_try_timeout"].as_str(), Some("0.2s"));
        assert_eq!(replayable["request_body_buffer_limit"].as_u64(), Some(1024));
        // Every other method: only after a failure that reached no instance.
        assert_eq!(other["match"]["headers"].as_sequence().unwrap().len(), 1);
        let retry = &other["route"]["retry_policy"];
        assert_eq!(
            retry["retry_on"].as_str(),
            Some("connect-failure,refused-stream")
        );
        assert_eq!(retry.get("per_try_timeout"), None);
        assert_eq!(
            gateway_routes(&foo, "detour|west|apps|foo", None, GatewayMatch::Authority).len(),
            1
        );
    }

    #[test]
    fn a_gateway_knows_a_service_by_the_target_header_or_by_its_authority() {
        let green = ServiceName::new("web", "green");
        let [by_header] = gateway_routes(
            &green,
            "detour|west|web|green",
            None,
            GatewayMatch::TargetHeader,
        )
        .try_into()
        .unwrap();
        let matcher = &by_header["match"]["headers"][0];
        assert_eq!(matcher["name"].as_str(), Some(TARGET_HEADER));
        assert_eq!(matcher["string_match"]["exact"].as_str(), Some("green.web"));
        // The service gets its own authority, and not detour's header.
        assert_eq!(
            by_header["route"]["host_rewrite_literal"].as_str(),
            Some("green.web")
        );
        assert_eq!(
            by_header["request_headers_to_remove"][0].as_str(),
            Some(TARGET_HEADER)
        );
        let [by_authority] = gateway_routes(
            &green,
            "detour|west|web|green",
            None,
            GatewayMatch::Authority,
        )
        .try_into()
        .unwrap();
        let regex = by_authority["match"]["headers"][0]["string_match"]["safe_regex"]["regex"]
            .as_str()
            .unwrap();
        assert_eq!(regex, r"^green\.web(:[0-9]+)?$");
        assert_eq!(by_authority["route"].get("host_rewrite_literal"), None);
    }
}
