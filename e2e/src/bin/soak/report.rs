//! The soak's verdict: what clients saw against what the service instances received,
//! latency, memory, and what the chaos did. Violations of the contract (a failed
//! idempotent request, a POST delivered twice, a client and the servers disagreeing,
//! memory growing past the bound) make the soak fail.

use crate::chaos::{Tally, utc_at};
use crate::memory::Memory;
use detour_e2e::deliveries::Deliveries;
use detour_e2e::grpc::Call;
use detour_e2e::load::{LoadReport, Sample};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Methods the scheme replays: none of them may fail.
const IDEMPOTENT: [&str; 1] = ["GET"];

pub struct Verdict {
    pub text: String,
    pub violations: Vec<String>,
}

pub fn judge(
    report: &LoadReport,
    deliveries: &Deliveries,
    memory: &Memory,
    tally: &Tally,
    ran: Duration,
) -> Verdict {
    let mut text = String::new();
    let mut violations = Vec::new();
    let by_method = count_by(&report.samples, |s| s.method.clone());
    let _ = writeln!(
        text,
        "{} requests in {:.0} s ({:?}); answered by {:?}",
        report.total(),
        ran.as_secs_f64(),
        by_method,
        report.by_cluster()
    );

    for method in IDEMPOTENT {
        let failed = report.failures_of(method);
        let _ = writeln!(
            text,
            "failed {method}s: {}, by status, x-detour-reason: {:?}",
            failed.len(),
            count_by(failed.iter().copied(), status_reason)
        );
        for sample in failed.iter().take(10) {
            let _ = writeln!(text, "  {} sent {}", sample.summary(), utc_at(sample.sent));
        }
        if !failed.is_empty() {
            violations.push(format!("{} {method}s failed", failed.len()));
        }
    }

    let twice = deliveries.more_than_once("POST");
    let _ = writeln!(text, "POSTs delivered twice: {}", twice.len());
    for (id, places) in twice.iter().take(10) {
        let _ = writeln!(text, "  {id}: {places:?}");
    }
    if !twice.is_empty() {
        violations.push(format!("{} POSTs delivered twice", twice.len()));
    }
    let mismatched = deliveries.mismatched(report, "POST");
    if !mismatched.is_empty() {
        let _ = writeln!(
            text,
            "POSTs answered 200 that did not arrive exactly once where answered: {}",
            mismatched.len()
        );
        violations.push(format!(
            "{} POSTs: client and servers disagree",
            mismatched.len()
        ));
    }

    let failed_posts = report.failures_of("POST");
    let reasons = count_by(failed_posts.iter().copied(), |s| {
        let arrived = if deliveries.reached(s) {
            "had reached an instance"
        } else {
            "reached no instance"
        };
        format!("{} ({arrived})", status_reason(s))
    });
    let _ = writeln!(
        text,
        "failed POSTs: {} of {}, by status, x-detour-reason: {reasons:#?}",
        failed_posts.len(),
        by_method.get("POST").copied().unwrap_or(0)
    );

    for method in by_method.keys() {
        let _ = writeln!(
            text,
            "latency of {method}s answered 200: {}",
            quantiles(report, method)
        );
    }

    let _ = writeln!(text, "memory (RSS, MiB):");
    text.push_str(&memory.table());
    violations.extend(memory.violations());

    let _ = writeln!(
        text,
        "chaos: {:?}; {} picks refused (would have left no live instance reachable)",
        tally.done, tally.refused
    );
    Verdict { text, violations }
}

/// Every failed request, one line each with the UTC time it was sent, to read beside
/// `chaos.log` and the Envoys' logs.
pub fn failures(report: &LoadReport) -> String {
    report
        .failures()
        .iter()
        .map(|s| format!("{} {}\n", utc_at(s.sent), s.summary()))
        .collect()
}

fn status_reason(s: &Sample) -> String {
    match (s.status(), s.reason()) {
        (Some(status), reason) => format!("{status} {}", reason.unwrap_or("-")),
        (None, _) => "no answer".to_string(),
    }
}

fn count_by<'a>(
    samples: impl IntoIterator<Item = &'a Sample>,
    key: impl Fn(&Sample) -> String,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for sample in samples {
        *counts.entry(key(sample)).or_insert(0) += 1;
    }
    counts
}

/// p50, p99 and max of the successful requests of `method`.
fn quantiles(report: &LoadReport, method: &str) -> String {
    let mut latencies: Vec<Duration> = report
        .samples
        .iter()
        .filter(|s| s.method == method && s.succeeded())
        .map(|s| s.latency)
        .collect();
    latencies.sort();
    let at = |q: f64| {
        let last = latencies.len().saturating_sub(1);
        latencies
            .get((q * last as f64).round() as usize)
            .map_or_else(
                || "-".to_string(),
                |d| format!("{:.1} ms", d.as_secs_f64() * 1e3),
            )
    };
    format!("p50 {}, p99 {}, max {}", at(0.5), at(0.99), at(1.0))
}

/// The gRPC calls: by status code (a unary call is a POST: one cut off by a kill may
/// fail, and is not sent elsewhere), and the latency of those that succeeded.
pub fn grpc(calls: &[Call]) -> String {
    let mut codes: BTreeMap<&str, usize> = BTreeMap::new();
    for call in calls {
        *codes.entry(call.code.as_str()).or_insert(0) += 1;
    }
    let mut ms: Vec<f64> = calls.iter().filter(|c| c.ok()).map(|c| c.ms).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let last = ms.len().saturating_sub(1);
        ms.get((q * last as f64).round() as usize)
            .map_or_else(|| "-".to_string(), |v| format!("{v:.1} ms"))
    };
    let mut text = format!(
        "gRPC unary calls: {}, by status: {codes:?}; latency of OK calls: p50 {}, p99 {}, max {}\n",
        calls.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    for call in calls.iter().filter(|c| !c.ok()).take(5) {
        let _ = writeln!(text, "  {}", call.summary());
    }
    text
}
