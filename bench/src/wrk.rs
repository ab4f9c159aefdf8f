//! One closed-loop load run with wrk: a fixed number of keep-alive connections, each
//! sending its next request as soon as the last one is answered.

use crate::procfs::cpu_time;
use crate::tools::{wrk, wrk_script};
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::net::SocketAddr;
use std::process::Command;

/// What one run gave (the JSON line bench/wrk-report.lua prints).
#[derive(Debug, Clone, Deserialize)]
pub struct WrkRun {
    pub requests: u64,
    pub duration_us: u64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub non_2xx: u64,
    pub timeouts: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// CPU time the watched process used during the run, per request (µs).
    #[serde(skip)]
    pub cpu_us_per_request: f64,
}

impl WrkRun {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / (self.duration_us as f64 / 1e6)
    }

    pub fn errors(&self) -> u64 {
        self.connect_errors + self.read_errors + self.write_errors + self.non_2xx + self.timeouts
    }
}

/// GET `/` with `Host: host` on `connections` connections for `seconds` (wrk takes
/// whole seconds), one wrk thread; `watch` is the pid whose CPU time per request is
/// recorded (the Envoy).
pub fn run(
    addr: SocketAddr,
    host: &str,
    connections: u32,
    seconds: u64,
    watch: u32,
) -> Result<WrkRun> {
    let before = cpu_time(watch)?;
    let output = Command::new(wrk()?)
        .args(["-t1", "-c"])
        .arg(connections.to_string())
        .arg("-d")
        .arg(format!("{seconds}s"))
        .arg("--timeout")
        .arg("5s")
        .arg("-H")
        .arg(format!("Host: {host}"))
        .arg("-s")
        .arg(wrk_script())
        .arg(format!("http://{addr}/"))
        .output()
        .context("running wrk")?;
    let cpu = cpu_time(watch)?.saturating_sub(before);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk against {addr} failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("wrk printed no summary: {stdout}"))?;
    let mut run: WrkRun =
        serde_json::from_str(line).with_context(|| format!("wrk's summary: {line}"))?;
    run.cpu_us_per_request = cpu.as_secs_f64() * 1e6 / run.requests.max(1) as f64;
    Ok(run)
}
