//! A Gloo health check (an Upstream's `healthChecks[i]`) as a scheme's `healthCheck`:
//! HTTP path or gRPC service name, interval, timeout and thresholds, written as near as
//! detour can keep them when it cannot keep them exactly.

use super::Problem;
use super::read::{CheckKind, GlooDoc, HealthCheck};
use detour_core::docs::{GrpcHealthCheckSpec, HealthCheckSpec};
use detour_filter::duration::parse_duration;
use std::time::Duration;

/// The shortest health-check interval a controller allows by default
/// (`--min-health-check-interval`; `detour_core::validate` refuses shorter).
const MIN_INTERVAL: Duration = detour_core::validate::DEFAULT_MIN_HEALTH_CHECK_INTERVAL;

/// The scheme's check from `check` of the Upstream `source`; notes into `report`, and
/// `refused` a duration it cannot read.
pub fn health_check(
    source: &GlooDoc,
    check: &HealthCheck,
    report: &mut Vec<Problem>,
    refused: &mut Vec<Problem>,
) -> Option<HealthCheckSpec> {
    let mut spec = HealthCheckSpec::default();
    let fallback = "detour checks with an HTTP GET or a gRPC Health/Check only: the scheme checks GET /healthz (its default) instead";
    match &check.kind {
        CheckKind::Http { path: Some(path) } => spec.path = Some(path.clone()),
        CheckKind::Http { path: None } => report.push(source.problem(
            &format!("{}.httpHealthCheck", check.path),
            "names no path: detour checks its default, /healthz",
        )),
        CheckKind::Grpc { service_name } => {
            spec.grpc = Some(GrpcHealthCheckSpec {
                service_name: service_name.clone(),
            })
        }
        CheckKind::Other(Some(kind)) => report.push(source.problem(
            &format!("{}.{kind}", check.path),
            format!("not carried: {fallback}"),
        )),
        CheckKind::Other(None) => report.push(source.problem(
            &check.path,
            format!("names no httpHealthCheck or grpcHealthCheck: {fallback}"),
        )),
    }
    let mut ok = true;
    let mut duration = |field: &str, text: &Option<String>| {
        let text = text.as_ref()?;
        match parse_duration(text) {
            Ok(d) => Some((text.clone(), d)),
            Err(e) => {
                refused.push(source.problem(&format!("{}.{field}", check.path), e.to_string()));
                ok = false;
                None
            }
        }
    };
    let timeout = duration("timeout", &check.timeout);
    let interval = duration("interval", &check.interval);
    if !ok {
        return None;
    }
    // What detour would check with, its defaults filling in what Gloo left out.
    let defaults = detour_core::model::HealthCheck::default();
    let (interval, interval_text) = match interval {
        Some((_, i)) if i < MIN_INTERVAL => {
            report.push(source.problem(
                &format!("{}.interval", check.path),
                format!(
                    "shorter than a detour controller allows by default (--min-health-check-interval): written as {}ms",
                    MIN_INTERVAL.as_millis()
                ),
            ));
            (
                MIN_INTERVAL,
                Some(format!("{}ms", MIN_INTERVAL.as_millis())),
            )
        }
        Some((text, i)) => (i, Some(text)),
        None => (defaults.interval, None),
    };
    spec.interval = interval_text.clone();
    let timeout_path = format!("{}.timeout", check.path);
    spec.timeout = match timeout {
        Some((_, t)) if t.is_zero() => {
            report.push(source.problem(
                &timeout_path,
                "0: detour's checks need a timeout: written as the interval",
            ));
            Some(interval_text.unwrap_or_else(|| millis(interval)))
        }
        Some((_, t)) if t > interval => {
            report.push(source.problem(&timeout_path, "longer than the interval; detour's checks of a target never overlap, so the timeout is the interval"));
            Some(interval_text.unwrap_or_else(|| millis(interval)))
        }
        Some((text, _)) => Some(text),
        None if defaults.timeout > interval => {
            report.push(source.problem(&timeout_path, "absent, and detour's default (500ms) is longer than the interval: written as the interval"));
            Some(millis(interval))
        }
        None => None,
    };
    for (field, value, out) in [
        (
            "unhealthyThreshold",
            check.unhealthy_threshold,
            &mut spec.unhealthy_threshold,
        ),
        (
            "healthyThreshold",
            check.healthy_threshold,
            &mut spec.healthy_threshold,
        ),
    ] {
        *out = match value {
            Some(0) => {
                report.push(source.problem(
                    &format!("{}.{field}", check.path),
                    "0: detour needs at least 1, and writes 1",
                ));
                Some(1)
            }
            v => v,
        };
    }
    Some(spec)
}

/// A duration as detour's documents write it.
fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}
