//! What a process costs, read from /proc: the CPU time of all its threads and its
//! resident memory.

use anyhow::{Context, Result, bail};
use std::time::Duration;

/// Clock ticks per second of /proc/PID/stat's times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

/// User plus system CPU time of the whole process (every thread, including those that
/// exited), at the kernel's 10 ms granularity: measure over windows of seconds.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the parenthesised command name (which may contain spaces); utime
    // and stime are fields 14 and 15 of the whole line, so 12 and 13 of the rest.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("/proc/{pid}/stat: {stat:?}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("/proc/{pid}/stat field {}", i + 3))
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_millis(total * 1000 / TICKS_PER_SECOND))
}

/// Resident set size (VmRSS) in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(kib) = line.strip_prefix("VmRSS:") {
            let kib: u64 = kib
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("/proc/{pid}/status: {line:?}"))?;
            return Ok(kib * 1024);
        }
    }
    bail!("/proc/{pid}/status has no VmRSS")
}

/// Resident set size (VmRSS) in MiB.
pub fn rss_mib(pid: u32) -> Result<f64> {
    Ok(rss_bytes(pid)? as f64 / (1024.0 * 1024.0))
}

/// CPU used by `pid` while `work` runs, as a share of one core.
pub struct CpuWindow {
    pid: u32,
    cpu: Duration,
    at: std::time::Instant,
}

impl CpuWindow {
    pub fn start(pid: u32) -> Result<CpuWindow> {
        Ok(CpuWindow {
            pid,
            cpu: cpu_time(pid)?,
            at: std::time::Instant::now(),
        })
    }

    /// CPU time used since the start, and the wall time it was used in.
    pub fn end(&self) -> Result<(Duration, Duration)> {
        let cpu = cpu_time(self.pid)?.saturating_sub(self.cpu);
        Ok((cpu, self.at.elapsed()))
    }

    /// CPU used since the start as a percentage of one core.
    pub fn percent(&self) -> Result<f64> {
        let (cpu, wall) = self.end()?;
        Ok(100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {}
        assert!(cpu_time(pid).unwrap() > Duration::ZERO);
        assert!(rss_bytes(pid).unwrap() > 1024 * 1024);
    }
}
