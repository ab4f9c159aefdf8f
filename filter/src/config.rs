//! The filter's configuration: the JSON in Envoy's `configuration` field, or Istio's
//! `pluginConfig` (which Istio serialises to the same JSON). Parsed and checked once in
//! `on_configure`; every worker then shares the compiled [`FilterConfig`].

use crate::duration::parse_duration;
use crate::table::DEFAULT_MAX_TABLE_BYTES;
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// Header the filter sets, to the index of the priority group a request starts at, when
/// that is not the primary (a rendered route per group matches it).
pub const DEFAULT_ROUTE_HEADER: &str = "x-detour-route";
/// Request header an east-west gateway adds: the request already crossed clusters.
pub const VIA_HEADER: &str = "x-detour-via";
/// Response header a gateway adds with its `%RESPONSE_FLAGS%` when it answers itself (it
/// could not hand the request to its service), so the calling Envoy's router knows
/// whether the request got there. Believed only from a detour gateway: local service
/// clusters remove it from their answers before the router reads them.
pub const GATEWAY_FLAGS_HEADER: &str = "x-detour-gateway-flags";
/// Every header starting with this is detour's own; clients may not send them.
pub const INTERNAL_HEADER_PREFIX: &str = "x-detour-";

/// Compiled configuration, shared by every HTTP context of a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterConfig {
    /// Member cluster this Envoy runs in; the table fetched is this cluster's.
    pub cluster: String,
    pub controller: ControllerConfig,
    pub route_header: String,
    /// The Envoy configuration removes every header a client may not send (`x-detour-*`,
    /// the route header, `x-envoy-*` retry and timeout headers) before routing, as
    /// `detour render envoy` writes it, so the filter need not read every request's
    /// headers. False (the default): the filter removes them itself.
    pub envoy_removes_client_headers: bool,
    pub passive: PassiveConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ControllerConfig {
    /// Envoy cluster through which the controller is reached.
    pub envoy_cluster: String,
    /// `:authority` sent to the controller.
    pub authority: String,
    /// Path of this cluster's table.
    pub path: String,
    /// Pause between fetches when long-polling is off, and the base of the back-off
    /// after a failed fetch.
    pub poll_interval: Duration,
    /// How long the controller may hold a request open waiting for a new version
    /// (`?wait=`); zero turns long-polling off.
    pub long_poll: Duration,
    /// Longest back-off between failed fetches.
    pub max_backoff: Duration,
    pub max_table_bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PassiveConfig {
    /// Passive detection (the default). Off, the filter starts requests by the
    /// controller's table alone and ejects nothing; Envoy's router still carries every
    /// request on through the chain.
    pub enabled: bool,
    /// First ejection of a target that failed under this Envoy's eyes.
    pub base_ejection: Duration,
    /// Ejections double on repeated failures, up to this.
    pub max_ejection: Duration,
}

impl ControllerConfig {
    /// Fetch timeout: the long-poll window plus a margin for the answer itself.
    pub fn fetch_timeout(&self) -> Duration {
        self.long_poll + Duration::from_secs(5)
    }
}

/// An invalid configuration, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid detour filter configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A duration field: a string such as `"1s"`, or a number of seconds (Istio turns
/// `pluginConfig` numbers into JSON numbers).
#[derive(Deserialize)]
#[serde(untagged)]
enum DurationField {
    Text(String),
    Seconds(f64),
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    cluster: Option<String>,
    #[serde(default)]
    controller: RawController,
    route_header: Option<String>,
    envoy_removes_client_headers: Option<bool>,
    #[serde(default)]
    passive: RawPassive,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawController {
    envoy_cluster: Option<String>,
    authority: Option<String>,
    path: Option<String>,
    poll_interval: Option<DurationField>,
    long_poll: Option<DurationField>,
    max_backoff: Option<DurationField>,
    max_table_bytes: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPassive {
    enabled: Option<bool>,
    base_ejection: Option<DurationField>,
    max_ejection: Option<DurationField>,
}

fn duration(
    field: &str,
    value: Option<DurationField>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(DurationField::Text(t)) => {
            parse_duration(&t).map_err(|e| ConfigError(format!("{field}: {e}")))
        }
        Some(DurationField::Seconds(s)) if s.is_finite() && (0.0..1e9).contains(&s) => {
            Ok(Duration::from_secs_f64(s))
        }
        Some(DurationField::Seconds(s)) => Err(ConfigError(format!(
            "{field}: {s} is not a usable number of seconds"
        ))),
    }
}

/// A name that is safe to use in Envoy headers and stats: non-empty, printable ASCII.
fn token(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError(format!(
            "{field}: {value:?} must be non-empty printable ASCII without spaces"
        )));
    }
    Ok(())
}

impl FilterConfig {
    /// Parses the configuration bytes Envoy hands to `on_configure`.
    pub fn parse(bytes: &[u8]) -> Result<FilterConfig, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ConfigError(
                "empty; at least {\"cluster\": \"<member cluster name>\"} is required".into(),
            ));
        }
        let raw: RawConfig =
            serde_json::from_slice(bytes).map_err(|e| ConfigError(e.to_string()))?;
        let cluster = raw.cluster.ok_or_else(|| {
            ConfigError("cluster: required (the member cluster this Envoy runs in)".into())
        })?;
        token("cluster", &cluster)?;

        let c = raw.controller;
        let envoy_cluster = c
            .envoy_cluster
            .unwrap_or_else(|| "detour_controller".into());
        token("controller.envoyCluster", &envoy_cluster)?;
        let authority = c.authority.unwrap_or_else(|| "detour-controller".into());
        token("controller.authority", &authority)?;
        let path = c.path.unwrap_or_else(|| format!("/v1/tables/{cluster}"));
        if !path.starts_with('/') {
            return Err(ConfigError(format!(
                "controller.path: {path:?} must start with '/'"
            )));
        }
        token("controller.path", &path)?;
        let poll_interval = duration(
            "controller.pollInterval",
            c.poll_interval,
            Duration::from_secs(1),
        )?;
        if poll_interval < Duration::from_millis(50) {
            return Err(ConfigError(
                "controller.pollInterval: must be at least 50ms".into(),
            ));
        }
        let long_poll = duration("controller.longPoll", c.long_poll, Duration::from_secs(30))?;
        let max_backoff = duration(
            "controller.maxBackoff",
            c.max_backoff,
            Duration::from_secs(30),
        )?;
        if max_backoff < poll_interval {
            return Err(ConfigError(
                "controller.maxBackoff: must not be shorter than controller.pollInterval".into(),
            ));
        }
        let max_table_bytes = c.max_table_bytes.unwrap_or(DEFAULT_MAX_TABLE_BYTES);
        if max_table_bytes < 1024 {
            return Err(ConfigError(
                "controller.maxTableBytes: must be at least 1024".into(),
            ));
        }

        let route_header = raw
            .route_header
            .unwrap_or_else(|| DEFAULT_ROUTE_HEADER.into())
            .to_ascii_lowercase();
        token("routeHeader", &route_header)?;
        if route_header.starts_with(':') {
            return Err(ConfigError(
                "routeHeader: pseudo-headers cannot route".into(),
            ));
        }

        let base_ejection = duration(
            "passive.baseEjection",
            raw.passive.base_ejection,
            Duration::from_secs(2),
        )?;
        let max_ejection = duration(
            "passive.maxEjection",
            raw.passive.max_ejection,
            // Short: an ejection only moves where requests start (every chain still
            // ends with the groups it skipped), and long outages are the controller's
            // checks' to judge; a long back-off under churn kept traffic away from a
            // primary that was back.
            Duration::from_secs(10),
        )?;
        if base_ejection.is_zero() || max_ejection < base_ejection {
            return Err(ConfigError(
                "passive: baseEjection must be positive and not above maxEjection".into(),
            ));
        }

        Ok(FilterConfig {
            cluster,
            controller: ControllerConfig {
                envoy_cluster,
                authority,
                path,
                poll_interval,
                long_poll,
                max_backoff,
                max_table_bytes,
            },
            route_header,
            envoy_removes_client_headers: raw.envoy_removes_client_headers.unwrap_or(false),
            passive: PassiveConfig {
                enabled: raw.passive.enabled.unwrap_or(true),
                base_ejection,
                max_ejection,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn only_the_cluster_is_required() {
        let c = FilterConfig::parse(br#"{"cluster":"east"}"#).unwrap();
        assert_eq!(c.cluster, "east");
        assert_eq!(c.controller.envoy_cluster, "detour_controller");
        assert_eq!(c.controller.path, "/v1/tables/east");
        assert_eq!(c.controller.long_poll, Duration::from_secs(30));
        assert_eq!(c.route_header, "x-detour-route");
        assert_eq!(c.passive.base_ejection, Duration::from_secs(2));
        assert!(c.passive.enabled);
        assert!(!c.envoy_removes_client_headers);
    }

    #[test]
    fn passive_detection_and_header_removal_can_be_switched() {
        let c = FilterConfig::parse(
            br#"{"cluster":"east","passive":{"enabled":false},"envoyRemovesClientHeaders":true}"#,
        )
        .unwrap();
        assert!(!c.passive.enabled);
        assert!(c.envoy_removes_client_headers);
        assert_eq!(c.passive.base_ejection, Duration::from_secs(2));
        assert_eq!(c.passive.max_ejection, Duration::from_secs(10));
    }

    #[test]
    fn durations_may_be_text_or_seconds() {
        let c = FilterConfig::parse(
            br#"{"cluster":"east","controller":{"pollInterval":"250ms","longPoll":10},
                 "passive":{"baseEjection":0.5,"maxEjection":"1m"}}"#,
        )
        .unwrap();
        assert_eq!(c.controller.poll_interval, Duration::from_millis(250));
        assert_eq!(c.controller.long_poll, Duration::from_secs(10));
        assert_eq!(c.passive.base_ejection, Duration::from_millis(500));
        assert_eq!(c.passive.max_ejection, Duration::from_secs(60));
    }

    #[test]
    fn refusals_name_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"{}", "cluster: required"),
            (br#"{"cluster":""}"#, "cluster:"),
            (br#"{"cluster":"east","bogus":1}"#, "unknown field `bogus`"),
            (
                br#"{"cluster":"east","controller":{"longPoll":"soon"}}"#,
                "controller.longPoll",
            ),
            (
                br#"{"cluster":"east","controller":{"path":"tables"}}"#,
                "controller.path",
            ),
            (
                br#"{"cluster":"east","passive":{"baseEjection":"10s","maxEjection":"1s"}}"#,
                "passive",
            ),
            (
                br#"{"cluster":"east","routeHeader":":authority"}"#,
                "routeHeader",
            ),
            // Gone with the in-filter replay: refused, not silently ignored.
            (
                br#"{"cluster":"east","replayTimeout":"1s"}"#,
                "unknown field",
            ),
        ];
        for (json, needle) in cases {
            let err = FilterConfig::parse(json).unwrap_err().to_string();
            assert!(
                err.contains(needle),
                "{}: {err}",
                String::from_utf8_lossy(json)
            );
        }
    }
}
