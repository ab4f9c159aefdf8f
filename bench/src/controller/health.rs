//! The health checker at scale: `detour serve` on a made-up federation of 50 member
//! clusters whose gateways are the bench's own fast HTTP servers (one process, one
//! loopback address per cluster), every target checked every second, in plain HTTP, on
//! the connections the controller keeps open to each gateway. The gateways run on the
//! same two cores; their CPU is reported next to the controller's.

use super::documents::Federation;
use super::serve::Serve;
use super::tables::CLUSTERS;
use crate::gateways::Gateways;
use crate::procfs::{CpuWindow, rss_mib};
use anyhow::{Context, Result, ensure};
use detour_e2e::out::OutDir;
use std::time::{Duration, Instant};

pub const TARGETS: [usize; 3] = [1_000, 5_000, 10_000];
/// Measured after the first rounds of checks, for this long.
const SETTLE: Duration = Duration::from_secs(2);
pub const WINDOW: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct HealthScale {
    pub targets: usize,
    pub ready_s: f64,
    pub cpu_percent: f64,
    pub rss_mib: f64,
    pub probes_per_second: f64,
    /// Health changes during the window: with every gateway answering, each is a check
    /// that timed out on this machine (the controller and the gateways share 2 cores).
    pub transitions: f64,
    pub healthy: f64,
    /// The bench's gateways' CPU in the same window, for the machine's whole budget.
    pub gateways_cpu_percent: f64,
}

pub fn run(out: &OutDir, gateways: &Gateways) -> Result<Vec<HealthScale>> {
    let mut results = Vec::new();
    for targets in TARGETS {
        let federation = Federation {
            clusters: CLUSTERS,
            services: targets / CLUSTERS,
        };
        let dir = out.subdir(&format!("health-{targets}"))?;
        std::fs::write(
            dir.join("bench.yaml"),
            federation.documents(|k| gateways.addrs[k]),
        )?;
        let serve = Serve::start(&format!("controller-health-{targets}"), out, &dir, None)?;
        std::thread::sleep(SETTLE);
        let pid = serve.pid()?;
        let checks = serve.metric("detour_health_checks_total")?;
        let transitions = serve.metric("detour_health_transitions_total")?;
        let cpu = CpuWindow::start(pid)?;
        let gateways_cpu = CpuWindow::start(gateways.pid()?)?;
        let at = Instant::now();
        std::thread::sleep(WINDOW);
        let cpu_percent = cpu.percent()?;
        let gateways_cpu_percent = gateways_cpu.percent()?;
        let probes_per_second =
            (serve.metric("detour_health_checks_total")? - checks) / at.elapsed().as_secs_f64();
        let transitions = serve.metric("detour_health_transitions_total")? - transitions;
        let healthy = serve.metric_with("detour_target_health", "state=\"Healthy\"")?;
        let rss_mib = rss_mib(pid)?;
        ensure!(
            probes_per_second > 0.5 * targets as f64,
            "{probes_per_second:.0} probes/s for {targets} targets checked every second"
        );
        eprintln!(
            "  health checker: {targets} targets: ready after {:.1} s, {cpu_percent:.0}% CPU, \
             {rss_mib:.0} MiB, {probes_per_second:.0} probes/s, {transitions} transitions, \
             {healthy} Healthy; gateways {gateways_cpu_percent:.0}% CPU",
            serve.ready_after.as_secs_f64()
        );
        results.push(HealthScale {
            targets,
            ready_s: serve.ready_after.as_secs_f64(),
            cpu_percent,
            rss_mib,
            probes_per_second,
            transitions,
            healthy,
            gateways_cpu_percent,
        });
        drop(serve);
    }
    Ok(results)
}

/// The gateways of the made-up federations: one loopback address per cluster.
pub fn start_gateways(out: &OutDir) -> Result<Gateways> {
    let addrs = (0..CLUSTERS)
        .map(|k| detour_e2e::ports::free_addr(std::net::Ipv4Addr::new(127, 0, 10, k as u8 + 1)))
        .collect::<Result<Vec<_>>>()
        .context("choosing the gateways' addresses")?;
    Gateways::start(addrs, out)
}
