//! The fields of Gloo documents the import does not carry, and why.

use super::Problem;
use super::read::GlooDoc;

/// A note for each field of `doc` not carried, but those under a path in `skip`
/// (reported whole).
pub fn uncarried_notes<'d>(
    doc: &'d GlooDoc,
    skip: &'d [String],
) -> impl Iterator<Item = Problem> + 'd {
    doc.uncarried
        .iter()
        .filter(|f| !skip.iter().any(|s| f.path.starts_with(s.as_str())))
        .map(|f| doc.problem(&f.path, format!("not carried: {}", why(&f.field))))
}

/// Why a Gloo field has no place in detour's documents.
fn why(field: &str) -> &'static str {
    match field {
        "sslConfig" | "useTls" | "sniAddr" => {
            "detour carries requests between clusters over its own mTLS, and speaks plaintext to the service"
        }
        "outlierDetection" => {
            "detour's Envoy ejects failing instances with outlier detection of its own"
        }
        "circuitBreakers"
        | "connectionConfig"
        | "loadBalancerConfig"
        | "initialStreamWindowSize"
        | "initialConnectionWindowSize"
        | "maxConcurrentStreams"
        | "httpProxyHostname"
        | "protocolSelection"
        | "ignoreHealthOnHostRemoval"
        | "respectDnsTtl"
        | "dnsRefreshRate" => "the Envoy clusters are detour's own (`detour render envoy`)",
        "failover" => "an Upstream's own failover endpoints: detour imports FailoverSchemes",
        "selector" | "subsetSpec" | "serviceSpec" | "loadBalancingWeight" | "healthCheckConfig" => {
            "detour routes to the whole Service, every instance alike"
        }
        "host"
        | "requestHeadersToAdd"
        | "requestHeadersToRemove"
        | "expectedStatuses"
        | "useHttp2"
        | "method"
        | "authority"
        | "initialMetadata" => {
            "detour's health check is a plain GET of the path (or a plain gRPC Health/Check), which a 2xx (SERVING) passes"
        }
        "noTrafficInterval"
        | "unhealthyInterval"
        | "unhealthyEdgeInterval"
        | "healthyEdgeInterval"
        | "intervalJitter"
        | "intervalJitterPercent"
        | "initialJitter"
        | "reuseConnection"
        | "eventLogPath"
        | "alwaysLogHealthCheckFailures"
        | "altPort"
        | "noTrafficHealthyInterval" => {
            "detour checks every target at one interval, with the thresholds and timeout only"
        }
        "discoveryMetadata" => "Gloo discovery's own record of the Service",
        _ => "detour has no equivalent",
    }
}
