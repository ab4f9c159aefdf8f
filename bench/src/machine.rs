//! The machine the figures were measured on, for the report.

use anyhow::{Context, Result};
use detour_e2e::paths::envoy_bin;
use std::process::Command;

#[derive(Debug, Clone)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub envoy: String,
    /// 1-minute load average when the bench started: other work shares the machine.
    pub load_at_start: String,
}

impl Machine {
    pub fn one_line(&self) -> String {
        format!(
            "{} cores ({}), {:.0} GiB, Linux {}, Envoy {}, load {}",
            self.cores,
            self.cpu_model,
            self.memory_gib,
            self.kernel,
            self.envoy,
            self.load_at_start
        )
    }
}

pub fn describe() -> Result<Machine> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let load_at_start = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string();
    let envoy = Command::new(envoy_bin()?)
        .arg("--version")
        .output()
        .context("running envoy --version")?;
    // "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    let envoy = String::from_utf8_lossy(&envoy.stdout)
        .split("version:")
        .nth(1)
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    Ok(Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model,
        memory_gib: memory_kib / 1024.0 / 1024.0,
        kernel,
        envoy,
        load_at_start,
    })
}
