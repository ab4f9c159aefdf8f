//! One closed-loop gRPC load run with h2load (Debian's nghttp2-client): HTTP/2 with prior
//! knowledge, a fixed number of connections with one stream in flight each, every
//! request a unary gRPC call (`POST`, `content-type: application/grpc`, one framed
//! message), the answer a framed message and the `grpc-status` trailer. The result has
//! the shape of a wrk run so that the overhead stage's tables serve both.

use crate::procfs::cpu_time;
use crate::tools::on_path;
use crate::wrk::WrkRun;
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

/// The call every request makes.
pub const PATH: &str = "/detour.bench.Echo/Unary";

/// A gRPC message of a few bytes, framed (no compression, length, message).
const MESSAGE: &[u8] = &[0, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o'];

/// Unary calls to `addr` with `:authority: host` on `connections` connections for
/// `seconds`; `watch` is the pid whose CPU time per request is recorded (the Envoy);
/// `scratch` is a directory for the request body and the per-request log.
pub fn run(
    addr: SocketAddr,
    host: &str,
    connections: u32,
    seconds: u64,
    watch: u32,
    scratch: &Path,
) -> Result<WrkRun> {
    let data = scratch.join("h2load-request.bin");
    let log = scratch.join("h2load-requests.log");
    std::fs::write(&data, MESSAGE).context("writing h2load's request body")?;
    let _ = std::fs::remove_file(&log);
    let before = cpu_time(watch)?;
    let output = Command::new(on_path("h2load", "nghttp2-client")?)
        .args(["-t1", "-m1", "-c"])
        .arg(connections.to_string())
        .arg("-D")
        .arg(seconds.to_string())
        .args(["-H", &format!(":authority: {host}")])
        .args(["-H", "content-type: application/grpc"])
        .args(["-H", "te: trailers"])
        .arg("-d")
        .arg(&data)
        .arg("--log-file")
        .arg(&log)
        .arg(format!("http://{addr}{PATH}"))
        .output()
        .context("running h2load")?;
    let cpu = cpu_time(watch)?.saturating_sub(before);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "h2load against {addr} failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let (succeeded, failed) =
        summary(&stdout).with_context(|| format!("h2load printed no request summary: {stdout}"))?;
    let mut latencies: Vec<f64> = std::fs::read_to_string(&log)
        .context("reading h2load's request log")?
        .lines()
        .filter_map(|line| line.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok(WrkRun {
        requests: succeeded,
        duration_us: seconds * 1_000_000,
        connect_errors: 0,
        read_errors: 0,
        write_errors: 0,
        non_2xx: failed,
        timeouts: 0,
        p50_us: at(0.50),
        p99_us: at(0.99),
        cpu_us_per_request: cpu.as_secs_f64() * 1e6 / succeeded.max(1) as f64,
    })
}

/// (succeeded, failed + errored + timed out) from h2load's `requests:` line.
fn summary(stdout: &str) -> Option<(u64, u64)> {
    let line = stdout.lines().find(|l| l.starts_with("requests:"))?;
    let count = |what: &str| -> Option<u64> {
        line.split(',')
            .find(|part| part.trim().ends_with(what))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let failed = count("failed")? + count("errored")? + count("timeout").unwrap_or(0);
    Some((count("succeeded")?, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_summary_is_read() {
        let out = "finished in 2.00s, 9000.00 req/s, 1MB/s\n\
                   requests: 18000 total, 18001 started, 18000 done, 17990 succeeded, 7 failed, 3 errored, 0 timeout\n";
        assert_eq!(summary(out), Some((17990, 10)));
        assert_eq!(summary("nothing"), None);
    }
}
