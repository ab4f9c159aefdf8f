//! Failover time: steady GET load through east's ingress (the scheme's primary is east's
//! `foo`), east's `foo` killed with SIGKILL, and every request timed. Per trial:
//!
//! * **first**: from the kill to the first answer from another cluster;
//! * **full switch**: from the kill to the moment requests stop starting at the dead
//!   primary — the filter's ejection of east (its line in Envoy's log) or the adoption of
//!   the table that says east is down, whichever came first, or the last request the
//!   client saw fail if later; before it, each request's first attempt fails on east and
//!   Envoy's router carries it on to west (**carried**);
//! * **failed**: requests the client saw fail (all are GETs, idempotent);
//! * **table**: from the kill to the controller's table saying Unhealthy, and to every
//!   VM of east's Envoy routing by that table.
//!
//! Three modes, each on a topology of its own (east and west, mTLS, the scheme's health
//! checks at the defaults: every 1 s, 500 ms timeout, 2 failures):
//! passive detection (the default), the controller's table alone pushed by
//! long-poll (`passive.enabled: false`), and the table alone fetched by plain polling
//! every second (`controller.longPoll: 0`).

use crate::stats::{Spread, ms};
use anyhow::{Context, Result};
use detour_e2e::client::Request;
use detour_e2e::envoy_log;
use detour_e2e::load::{Load, LoadReport, LoadSpec};
use detour_e2e::setup::{HealthCheck, Setup};
use detour_e2e::topology::{Topology, wait_served_by};
use detour_filter::health::Health;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// Requests per second through east's ingress, and the connections sending them.
pub const RATE: u32 = 500;
pub const WORKERS: usize = 8;
/// Load before the kill, so every connection is warm and answered by east.
const BEFORE: Duration = Duration::from_millis(1000);
/// Load after the table switched, so the tail of the timeline is seen.
const AFTER: Duration = Duration::from_millis(300);

pub struct Mode {
    pub key: &'static str,
    pub label: &'static str,
    /// Merge patch for the filter configuration `detour render envoy` writes.
    patch: Option<serde_json::Value>,
}

fn modes() -> Vec<Mode> {
    vec![
        Mode {
            key: "passive",
            label: "passive detection (default)",
            patch: None,
        },
        Mode {
            key: "long-poll",
            label: "table alone, long-poll (passive off)",
            patch: Some(serde_json::json!({"passive": {"enabled": false}})),
        },
        Mode {
            key: "polling",
            label: "table alone, polled every 1 s (passive, long-poll off)",
            patch: Some(serde_json::json!({
                "passive": {"enabled": false},
                "controller": {"longPoll": "0s"}
            })),
        },
    ]
}

/// One request of the timeline: sent at `sent_ms` after the kill, answered by `by`.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub sent_ms: f64,
    pub latency_ms: f64,
    /// The answering member cluster, or `failed`.
    pub by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub first_other_ms: Option<f64>,
    pub full_switch_ms: Option<f64>,
    pub failed: usize,
    /// Requests sent from the kill on.
    pub after_kill: usize,
    /// Requests sent between the kill and the full switch whose failed attempt on east
    /// the router carried on to west.
    pub carried: usize,
    pub table_ms: f64,
    pub adopted_ms: Option<f64>,
    pub points: Vec<Point>,
}

pub struct ModeResult {
    pub mode: Mode,
    pub trials: Vec<Trial>,
}

pub struct Failover {
    pub modes: Vec<ModeResult>,
    pub elapsed: Duration,
}

pub fn run(trials: usize) -> Result<Failover> {
    let started = Instant::now();
    let mut results = Vec::new();
    for mode in modes() {
        eprintln!("  mode {}: {}", mode.key, mode.label);
        let setup = Setup {
            clusters: vec!["east".into(), "west".into()],
            failover_groups: vec![vec!["west".into()]],
            health: HealthCheck {
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
                ..Setup::for_tests().health
            },
            stable_for: Duration::from_secs(1),
            filter_config: mode.patch.clone(),
            ..Setup::for_tests()
        };
        let mut t = Topology::start(&format!("bench-failover-{}", mode.key), setup)?;
        let mut done = Vec::new();
        for trial in 0..trials {
            if trial > 0 {
                recover(&mut t)?;
            }
            let result = run_trial(&mut t)?;
            eprintln!(
                "    trial {trial}: first {} ms, full switch {} ms, {} failed of {}, {} carried, \
                 table {:.0} ms",
                opt_ms(result.first_other_ms),
                opt_ms(result.full_switch_ms),
                result.failed,
                result.after_kill,
                result.carried,
                result.table_ms
            );
            done.push(result);
        }
        results.push(ModeResult { mode, trials: done });
    }
    Ok(Failover {
        modes: results,
        elapsed: started.elapsed(),
    })
}

fn opt_ms(ms: Option<f64>) -> String {
    ms.map_or("–".into(), |m| format!("{m:.0}"))
}

fn run_trial(t: &mut Topology) -> Result<Trial> {
    let east = t.ingress("east")?;
    let spec = LoadSpec {
        workers: WORKERS,
        pace: Some(Duration::from_secs_f64(WORKERS as f64 / f64::from(RATE))),
        mix: vec![Request::get("/")],
        max_duration: Duration::from_secs(60),
    };
    let load = Load::start(&east, spec)?;
    std::thread::sleep(BEFORE);
    let kill_wall = SystemTime::now();
    let kill = t.kill_upstream("east")?;
    let bound = t.setup().failover_bound();
    t.wait_target_health("east", Health::Unhealthy, bound)?;
    let table_ms = ms(kill.elapsed());
    t.wait_filter_current("east")?;
    let version = t.controller()?.table("east")?.version;
    load.wait_completed_after(
        Instant::now(),
        (AFTER.as_millis() as usize) * RATE as usize / 1000,
        bound,
    )?;
    let report = load.stop()?;
    let log = envoy_log::read(t.envoy("east")?.process().log_path())?;
    let since = |at: SystemTime| {
        at.duration_since(kill_wall)
            .map(ms)
            .unwrap_or_else(|e| -ms(e.duration()))
    };
    let ejected_ms = log
        .iter()
        .filter(|l| l.at >= kill_wall && l.text.contains("detour: ejected"))
        .map(|l| since(l.at))
        .reduce(f64::min);
    let adopted_ms = log
        .iter()
        .filter(|l| envoy_log::adopted_version(&l.text) == Some(version.as_str()))
        .map(|l| since(l.at))
        .reduce(f64::max);
    Ok(summarise(&report, kill, ejected_ms, table_ms, adopted_ms))
}

/// Restarts east's service and waits until east answers again (after the table's
/// failback damping and any passive ejection have run out).
fn recover(t: &mut Topology) -> Result<()> {
    t.restart_upstream("east")?;
    t.wait_target_health("east", Health::Healthy, t.setup().failback_bound())?;
    t.wait_filter_current("east")?;
    // A passive ejection backs off exponentially over repeated failures (2 s, 4 s...).
    wait_served_by(&t.ingress("east")?, "east", Duration::from_secs(20))
        .context("east answering again after its restart")?;
    Ok(())
}

fn summarise(
    report: &LoadReport,
    kill: Instant,
    ejected_ms: Option<f64>,
    table_ms: f64,
    adopted_ms: Option<f64>,
) -> Trial {
    let rel = |at: Instant| match at.checked_duration_since(kill) {
        Some(d) => ms(d),
        None => -ms(kill.duration_since(at)),
    };
    let points: Vec<Point> = report
        .samples
        .iter()
        .map(|s| Point {
            sent_ms: rel(s.sent),
            latency_ms: ms(s.latency),
            by: if s.succeeded() {
                s.served_by().unwrap_or("failed").to_string()
            } else {
                "failed".to_string()
            },
        })
        .collect();
    let first_other_ms = report
        .samples
        .iter()
        .filter(|s| s.succeeded() && s.served_by() != Some("east") && s.done() >= kill)
        .map(|s| rel(s.done()))
        .reduce(f64::min);
    let last_failed = points
        .iter()
        .filter(|p| p.by == "failed")
        .map(|p| p.sent_ms)
        .reduce(f64::max);
    let switched = match (ejected_ms, adopted_ms) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let full_switch_ms = match (last_failed, switched) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let carried = points
        .iter()
        .filter(|p| {
            p.sent_ms >= 0.0
                && full_switch_ms.is_some_and(|s| p.sent_ms <= s)
                && p.by != "failed"
                && p.by != "east"
        })
        .count();
    Trial {
        first_other_ms,
        full_switch_ms,
        failed: points.iter().filter(|p| p.by == "failed").count(),
        after_kill: points.iter().filter(|p| p.sent_ms >= 0.0).count(),
        carried,
        table_ms,
        adopted_ms,
        points,
    }
}

/// The timelines as JSON, for bench/plot_failover.py.
pub fn write_timelines(result: &Failover, path: &Path) -> Result<()> {
    #[derive(Serialize)]
    struct ModeOut<'a> {
        key: &'a str,
        label: &'a str,
        trials: &'a [Trial],
    }
    let modes: Vec<ModeOut> = result
        .modes
        .iter()
        .map(|m| ModeOut {
            key: m.mode.key,
            label: m.mode.label,
            trials: &m.trials,
        })
        .collect();
    crate::report::write_output(
        path,
        &serde_json::to_vec(&serde_json::json!({ "modes": modes }))?,
    )
}

impl Failover {
    pub fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "## Failover time\n");
        let _ = writeln!(
            out,
            "{RATE} GET/s through east's ingress on {WORKERS} keep-alive connections; east's \
             `foo` killed (SIGKILL) after {:.1} s. Per mode a fresh topology (east, west; mTLS \
             between them; health checks every 1 s, 500 ms timeout, unhealthy after 2), \
             {} trials (east restarted in between). **first**: kill → first answer from \
             west; **full switch**: kill → last request still sent to the dead primary (a \
             failure the client saw, or the filter's switch: its ejection of east or its \
             adoption of the table); **carried**: requests in between that Envoy's router \
             carried on to west; **table**: kill → \
             the controller's table says Unhealthy; **adopted**: kill → every VM of east's \
             Envoy routes by it. Median (min–max) over the trials, ms. Stage time {:.0} s; \
             timelines in `failover.png`.\n",
            BEFORE.as_secs_f64(),
            self.modes.first().map_or(0, |m| m.trials.len()),
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "| mode | first | full switch | failed requests | carried | table | adopted |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for m in &self.modes {
            let spread = |f: &dyn Fn(&Trial) -> Option<f64>| {
                Spread::of(m.trials.iter().filter_map(f)).show(0)
            };
            let failed: Vec<String> = m
                .trials
                .iter()
                .map(|t| format!("{}/{}", t.failed, t.after_kill))
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                m.mode.label,
                spread(&|t| t.first_other_ms),
                spread(&|t| t.full_switch_ms),
                failed.join(", "),
                spread(&|t| Some(t.carried as f64)),
                spread(&|t| Some(t.table_ms)),
                spread(&|t| t.adopted_ms),
            );
        }
        if let Some(passive) = self.modes.iter().find(|m| m.mode.key == "passive") {
            let failed: usize = passive.trials.iter().map(|t| t.failed).sum();
            let worst = passive
                .trials
                .iter()
                .filter_map(|t| t.full_switch_ms)
                .reduce(f64::max)
                .unwrap_or(f64::NAN);
            let _ = writeln!(
                out,
                "\nTargets with passive detection: zero failed idempotent requests — {} ({failed} \
                 failed); full switch under 100 ms — {} (worst trial {worst:.0} ms).\n",
                if failed == 0 { "met" } else { "**not met**" },
                if worst < 100.0 { "met" } else { "**not met**" },
            );
        }
        out
    }
}
