//! The simulated service `foo` of one member cluster: a real process (`upstream` bin)
//! per instance, that tests kill with SIGKILL, freeze with SIGSTOP, and start again on
//! the same address.
//!
//! It answers every request with 200 and names its cluster (`x-served-by`), and appends
//! one [`Record`] per request (health checks excepted) to a file, written before the
//! answer and unbuffered, so the record survives the process being killed. Tests compare
//! records with what clients saw ("no POST delivered twice").

use crate::client::HttpClient;
use crate::out::OutDir;
use crate::paths::upstream_bin;
use crate::process::{Process, ProcessSpec};
use crate::ready::wait_answering;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The path health checks use; not recorded.
pub const HEALTH_PATH: &str = "/healthz";

/// The upstream's WebSocket echo endpoint.
pub const WEBSOCKET_PATH: &str = "/ws";

/// Byte `i` of a `?download=N` answer: a pattern with a period (251, a prime) that no
/// power-of-two chunking lines up with, so a lost, repeated or reordered chunk shows.
pub fn download_byte(i: u64) -> u8 {
    // The remainder is below 251: the cast keeps it whole.
    (i % 251) as u8
}

/// How long a (re)started upstream may take to answer its health check.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One request as the upstream received it (one JSON line of the record file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub method: String,
    /// Path and query, as received.
    pub path: String,
    /// The `x-test-id` header, if the client sent one.
    pub test_id: Option<String>,
    /// The `x-detour-via` header: the request crossed an east-west gateway from there.
    pub via: Option<String>,
    /// The authority the request arrived with: `:authority` (HTTP/2) or `Host`
    /// (HTTP/1.1), e.g. `foo.apps` — the service the last proxy meant it for.
    #[serde(default)]
    pub authority: Option<String>,
    pub body_bytes: u64,
}

/// The JSON body of every answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    pub cluster: String,
    /// `namespace/name`.
    pub service: String,
    pub method: String,
    pub path: String,
    pub test_id: Option<String>,
    pub body_bytes: u64,
}

/// What one upstream process serves, and where.
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    pub cluster: String,
    /// `namespace/name`, e.g. `apps/foo`.
    pub service: String,
    pub listen: SocketAddr,
}

/// Names the files of instance `instance` (from 0) of `cluster`'s service:
/// `upstream-<cluster>` for the first (as when there is one), `upstream-<cluster>-<i>`
/// for the others.
pub fn stem(cluster: &str, instance: usize) -> String {
    match instance {
        0 => format!("upstream-{cluster}"),
        i => format!("upstream-{cluster}-{i}"),
    }
}

/// A running upstream server process.
pub struct Upstream {
    spec: UpstreamSpec,
    /// Which instance of the service in its cluster (from 0).
    instance: usize,
    process: Process,
    records: PathBuf,
    /// While this file exists, `/healthz` answers 503.
    fail_health: PathBuf,
    health: HttpClient,
    /// Stopped with SIGSTOP and not yet continued.
    frozen: bool,
    /// A gRPC server (`e2e/grpc/server.py`) rather than the `upstream` binary: it counts
    /// as serving once it accepts connections (it has no HTTP/1.1 `/healthz`).
    grpc: bool,
}

impl Upstream {
    /// Starts `upstream` (the cluster's first instance) and waits until it answers its
    /// health check. Its log is `upstream-<cluster>.log`, its records
    /// `upstream-<cluster>.records.jsonl`.
    pub fn start(spec: UpstreamSpec, out: &OutDir) -> Result<Upstream> {
        let mut upstream = Upstream::spawn(spec, 0, out)?;
        upstream.wait_serving()?;
        Ok(upstream)
    }

    /// Starts instance `instance` of the service without waiting, so that it starts
    /// together with everything else ([`Upstream::wait_serving`] waits); its files are
    /// named by [`stem`].
    pub fn spawn(spec: UpstreamSpec, instance: usize, out: &OutDir) -> Result<Upstream> {
        let stem = stem(&spec.cluster, instance);
        let records = out.file(&format!("{stem}.records.jsonl"));
        let fail_health = out.file(&format!("{stem}.fail-health"));
        let process = ProcessSpec::new(&stem, upstream_bin()?, out.file(&format!("{stem}.log")))
            .arg("--cluster")
            .arg(&spec.cluster)
            .arg("--service")
            .arg(&spec.service)
            .arg("--listen")
            .arg(spec.listen.to_string())
            .arg("--record")
            .arg(&records)
            .arg("--fail-health-if")
            .arg(&fail_health)
            .spawn()?;
        let health = HttpClient::new(spec.listen, "healthz").with_timeout(Duration::from_secs(1));
        Ok(Upstream {
            spec,
            instance,
            process,
            records,
            fail_health,
            health,
            frozen: false,
            grpc: false,
        })
    }

    /// Starts `e2e/grpc/server.py` ([`crate::grpc`]) as this cluster's service, with the
    /// same log and record files as [`Upstream::start`], and waits until it accepts
    /// connections. [`Upstream::fail_health_checks`] has no effect on it.
    pub fn start_grpc(spec: UpstreamSpec, out: &OutDir) -> Result<Upstream> {
        let mut upstream = Upstream::spawn_grpc(spec, 0, out)?;
        upstream.wait_serving()?;
        Ok(upstream)
    }

    /// [`Upstream::start_grpc`] for instance `instance`, without waiting.
    pub fn spawn_grpc(spec: UpstreamSpec, instance: usize, out: &OutDir) -> Result<Upstream> {
        let stem = stem(&spec.cluster, instance);
        let records = out.file(&format!("{stem}.records.jsonl"));
        let process = crate::grpc::server_spec(
            &stem,
            &spec.cluster,
            spec.listen,
            &records,
            out.file(&format!("{stem}.log")),
        )?
        .spawn()?;
        let health = HttpClient::new(spec.listen, "healthz").with_timeout(Duration::from_secs(1));
        Ok(Upstream {
            fail_health: out.file(&format!("{stem}.fail-health")),
            spec,
            instance,
            process,
            records,
            health,
            frozen: false,
            grpc: true,
        })
    }

    pub fn cluster(&self) -> &str {
        &self.spec.cluster
    }

    pub fn instance(&self) -> usize {
        self.instance
    }

    pub fn addr(&self) -> SocketAddr {
        self.spec.listen
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// SIGKILL: the service dies the way a crashed pod does.
    pub fn kill(&mut self) -> Result<()> {
        self.frozen = false;
        self.process.kill()
    }

    /// Starts it again on the same address and waits until it serves.
    pub fn restart(&mut self) -> Result<()> {
        self.frozen = false;
        self.process.restart()?;
        self.wait_serving()
    }

    /// SIGSTOP: the instance hangs as a wedged or paused pod does. Its socket still
    /// accepts connections (the kernel completes them), nothing answers.
    pub fn freeze(&mut self) -> Result<()> {
        self.process.signal(libc::SIGSTOP)?;
        self.frozen = true;
        Ok(())
    }

    /// SIGCONT after [`Upstream::freeze`]: it answers what it accepted meanwhile.
    pub fn thaw(&mut self) -> Result<()> {
        self.process.signal(libc::SIGCONT)?;
        self.frozen = false;
        Ok(())
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Running, not frozen: it answers.
    pub fn is_live(&mut self) -> bool {
        !self.frozen && self.process.ensure_running().is_ok()
    }

    /// Waits until it answers its health check (a gRPC server: until it accepts
    /// connections).
    pub fn wait_serving(&mut self) -> Result<()> {
        if self.grpc {
            return crate::grpc::wait_accepting(&mut self.process, self.spec.listen, START_TIMEOUT);
        }
        wait_answering(&mut self.process, &self.health, HEALTH_PATH, START_TIMEOUT)
    }

    /// Makes its health checks fail (503) or pass again, while every other request is
    /// still served: the controller's view changes, the traffic path does not.
    pub fn fail_health_checks(&self, fail: bool) -> Result<()> {
        let path = &self.fail_health;
        if fail {
            std::fs::write(path, b"").with_context(|| format!("creating {}", path.display()))
        } else {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("removing {}", path.display()))
                }
                _ => Ok(()),
            }
        }
    }

    /// Makes its health checks fail (503) as [`Upstream::fail_health_checks`] does, each
    /// only after `hold`: checks that take their time to fail.
    pub fn fail_health_checks_after(&self, hold: Duration) -> Result<()> {
        let path = &self.fail_health;
        std::fs::write(path, hold.as_millis().to_string())
            .with_context(|| format!("writing {}", path.display()))
    }

    pub fn records_path(&self) -> &Path {
        &self.records
    }

    /// Every request this upstream received, across restarts, in arrival order.
    pub fn records(&self) -> Result<Vec<Record>> {
        read_records(&self.records)
    }
}

/// Parses a record file; a missing file means no request arrived yet.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{}:{}: {line:?}", path.display(), i + 1))
        })
        .collect()
}
