//! What every rendered Envoy cluster carries so that an instance is a failure domain of
//! its own (DESIGN.md "Failure domains"): outlier detection that ejects a host after
//! failures that never reached a service (connect failures, resets, timeouts) but never
//! for the 5xx a service chose to send; circuit breakers that let retries through under
//! load (Envoy's default allows 3 concurrent retries per cluster, so most retries of a
//! busy service would overflow); on local service clusters, an upstream filter that
//! removes `x-detour-gateway-flags` from a service's answers, so that only a detour
//! gateway can tell the router that a request never reached its service; and on the
//! clusters of remote targets, one that names the target for its gateway
//! ([`TARGET_HEADER`]) whatever authority the client used.

use super::routes::TARGET_HEADER;
use crate::model::ServiceName;
use detour_filter::config::GATEWAY_FLAGS_HEADER;
use serde_norway::{Mapping, Value};

/// Concurrent retries a cluster allows: far above what a gateway's load needs, so that
/// retries never overflow (`UO`), yet bounded.
const MAX_RETRIES: u32 = 10_000;

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// What a cluster's hosts are.
#[derive(Debug, Clone, Copy)]
pub enum Upstream<'a> {
    /// Instances of a service of this cluster.
    Service,
    /// The gateway instances of another cluster, for its service `target`.
    Gateway { target: &'a ServiceName },
}

/// Adds outlier detection and circuit breakers to `cluster`, and the upstream filter
/// its hosts call for: a service's cluster keeps the service from forging gateway
/// flags; a remote target's names the target for the gateway.
pub fn harden(cluster: &mut Value, upstream: Upstream<'_>) {
    let Value::Mapping(m) = cluster else {
        return;
    };
    m.insert(Value::from("outlier_detection"), outlier_detection());
    m.insert(
        Value::from("circuit_breakers"),
        map! {
            "thresholds" => vec![map! { "priority" => "DEFAULT", "max_retries" => MAX_RETRIES }],
        },
    );
    let mutations = match upstream {
        Upstream::Service => map! {
            "response_mutations" => vec![map! { "remove" => GATEWAY_FLAGS_HEADER }],
        },
        Upstream::Gateway { target } => map! {
            "request_mutations" => vec![map! {
                "append" => map! {
                    "header" => map! { "key" => TARGET_HEADER, "value" => target.authority() },
                    "append_action" => "OVERWRITE_IF_EXISTS_OR_ADD",
                },
            }],
        },
    };
    upstream_filter(m, mutations);
}

fn outlier_detection() -> Value {
    map! {
        // Failures of the connection (refused, reset, timeout) are the host's; the
        // status codes a service answers with are the service's business.
        "split_external_local_origin_errors" => true,
        "consecutive_local_origin_failure" => 2,
        "enforcing_consecutive_local_origin_failure" => 100,
        "enforcing_consecutive_5xx" => 0,
        "enforcing_consecutive_gateway_failure" => 0,
        "enforcing_success_rate" => 0,
        "enforcing_local_origin_success_rate" => 0,
        "interval" => "1s",
        "base_ejection_time" => "2s",
        "max_ejection_time" => "30s",
        // Every host may be ejected: Envoy then routes in panic mode to all of them, the
        // attempt fails fast and the router moves on to the next group (an all-ejected
        // cluster answering `503 UH` would end the request instead).
        "max_ejection_percent" => 100,
    }
}

/// Sets `HttpProtocolOptions.http_filters` to [header mutation with `mutations`,
/// upstream codec], keeping the protocol the cluster already chose (HTTP/1.1 when it
/// chose none).
fn upstream_filter(cluster: &mut Mapping, mutations: Value) {
    let options = cluster
        .entry(Value::from("typed_extension_protocol_options"))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    let Value::Mapping(options) = options else {
        return;
    };
    let http = options
        .entry(Value::from(HTTP_PROTOCOL_OPTIONS))
        .or_insert_with(|| {
            map! {
                "@type" => format!("type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}"),
                "explicit_http_config" => map! { "http_protocol_options" => Mapping::new() },
            }
        });
    let Value::Mapping(http) = http else {
        return;
    };
    http.insert(
        Value::from("http_filters"),
        Value::Sequence(vec![
            map! {
                "name" => "envoy.filters.http.header_mutation",
                "typed_config" => map! {
                    "@type" => "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                    "mutations" => mutations,
                },
            },
            map! {
                "name" => "envoy.filters.http.upstream_codec",
                "typed_config" => map! {
                    "@type" => "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec",
                },
            },
        ]),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_cluster_strips_forged_gateway_flags_and_keeps_its_protocol() {
        let mut plain = map! { "name" => "detour|east|apps|foo" };
        harden(&mut plain, Upstream::Service);
        let http = &plain["typed_extension_protocol_options"][HTTP_PROTOCOL_OPTIONS];
        assert!(http["explicit_http_config"]["http_protocol_options"].is_mapping());
        assert_eq!(
            http["http_filters"][0]["typed_config"]["mutations"]["response_mutations"][0]["remove"]
                .as_str(),
            Some("x-detour-gateway-flags")
        );
        assert_eq!(
            http["http_filters"][1]["name"].as_str(),
            Some("envoy.filters.http.upstream_codec")
        );
        // An HTTP/2 cluster stays HTTP/2.
        let mut h2 = map! {
            "name" => "detour|east|apps|bar",
            "typed_extension_protocol_options" => map! {
                HTTP_PROTOCOL_OPTIONS => map! {
                    "explicit_http_config" => map! { "http2_protocol_options" => Mapping::new() },
                },
            },
        };
        harden(&mut h2, Upstream::Service);
        let http = &h2["typed_extension_protocol_options"][HTTP_PROTOCOL_OPTIONS];
        assert!(http["explicit_http_config"]["http2_protocol_options"].is_mapping());
        assert!(
            http["explicit_http_config"]
                .get("http_protocol_options")
                .is_none()
        );
        assert!(http["http_filters"].is_sequence());
    }

    #[test]
    fn a_remote_cluster_believes_its_gateway_and_names_the_target() {
        let mut remote = map! { "name" => "detour|west|web|green" };
        harden(
            &mut remote,
            Upstream::Gateway {
                target: &ServiceName::new("web", "green"),
            },
        );
        assert_eq!(
            remote["outlier_detection"]["enforcing_consecutive_5xx"].as_u64(),
            Some(0)
        );
        assert_eq!(
            remote["circuit_breakers"]["thresholds"][0]["max_retries"].as_u64(),
            Some(u64::from(MAX_RETRIES))
        );
        let http = &remote["typed_extension_protocol_options"][HTTP_PROTOCOL_OPTIONS];
        let added = &http["http_filters"][0]["typed_config"]["mutations"]["request_mutations"][0]["append"]
            ["header"];
        assert_eq!(added["key"].as_str(), Some(TARGET_HEADER));
        assert_eq!(added["value"].as_str(), Some("green.web"));
        // Its gateway's answers keep their flags: the gateway is believed.
        assert!(
            http["http_filters"][0]["typed_config"]["mutations"]
                .get("response_mutations")
                .is_none()
        );
    }
}
