//! The routes of the ingress: for a scheme's primary, one route per start group and
//! method class, each carrying the chain of priority groups Envoy's router walks from
//! there ([`detour_filter::chain`]); for any other service, a route that retries on
//! another instance.
//!
//! The filter picks the start by setting the route header to the group's index (no
//! header: the primary). Routes are matched in order, so the header routes come first.

use crate::model::{Scheme, TargetRef};
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

/// The gateway's route to one of its cluster's services: another instance on a connect
/// failure, whatever the method (the request has not reached any).
pub fn gateway_route(envoy_cluster: &str) -> Value {
    map! {
        "match" => map! { "prefix" => "/" },
        "route" => map! {
            "cluster" => envoy_cluster,
            "timeout" => ROUTE_TIMEOUT,
            "retry_policy" => map! {
                "retry_on" => "connect-failure,refused-stream",
                "num_retries" => 2,
                "retry_host_predicate" => vec![previous_hosts()],
                "host_selection_retry_max_attempts" => HOST_SELECTION_ATTEMPTS,
                "retry_back_off" => back_off(),
            },
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
        matchers.push(map! {
            "name" => ":method",
            "string_match" => map! {
                "safe_regex" => map! { "regex" => format!("^({})$", scheme.replay.methods.join("|")) },
            },
        });
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
        assert_eq!(chain(first), [["detour|south|apps|foo"]]);
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
}
