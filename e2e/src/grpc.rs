//! Real gRPC on both ends, with grpcio from the repository's `.venv` (`make envoy`): the
//! service `detour.e2e.Echo` of `e2e/grpc/server.py` (a member cluster's upstream when
//! [`Protocol::Grpc`](crate::setup::Protocol::Grpc)) and the client `e2e/grpc/client.py`,
//! run once per call or as a load for a few seconds. Both speak JSON in raw bytes, so no
//! generated code is needed on either side.

use crate::paths::repo_root;
use crate::process::{Process, ProcessSpec};
use crate::wait::{Probe, wait_until};
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The venv's Python; it must have grpcio and grpcio-health-checking.
pub fn python() -> Result<PathBuf> {
    let path = repo_root().join(".venv/bin/python");
    if !path.is_file() {
        bail!(
            "{} not found: run `make envoy` (it installs grpcio too)",
            path.display()
        );
    }
    Ok(path)
}

fn script(name: &str) -> PathBuf {
    repo_root().join("e2e/grpc").join(name)
}

/// The server process of one member cluster, recording calls to `records`.
pub fn server_spec(
    name: &str,
    cluster: &str,
    listen: SocketAddr,
    records: &Path,
    log: PathBuf,
) -> Result<ProcessSpec> {
    Ok(ProcessSpec::new(name, python()?, log)
        .arg(script("server.py"))
        .arg("--cluster")
        .arg(cluster)
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--record")
        .arg(records))
}

/// Polls until something accepts TCP connections on `addr` (a gRPC server listens only
/// once it is ready to serve); a process that exits meanwhile ends the wait.
pub fn wait_accepting(process: &mut Process, addr: SocketAddr, within: Duration) -> Result<()> {
    let what = format!("{} accepts connections on {addr}", process.name());
    wait_until(&what, within, || {
        process.ensure_running()?;
        Ok(
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(_) => Probe::Ready(()),
                Err(e) => Probe::NotYet(e.to_string()),
            },
        )
    })
}

/// What the client saw of one call: the status by its name (`OK`, `NOT_FOUND`,
/// `UNAVAILABLE`, ...), the status message, both metadata and every message.
#[derive(Debug, Clone, Deserialize)]
pub struct Call {
    pub id: String,
    pub code: String,
    pub details: String,
    pub initial: BTreeMap<String, String>,
    pub trailing: BTreeMap<String, String>,
    pub messages: Vec<String>,
    /// The call's duration (load calls and unary calls).
    #[serde(default)]
    pub ms: f64,
}

impl Call {
    /// The cluster that answered, from the server's trailing metadata.
    pub fn served_by(&self) -> Option<&str> {
        self.trailing.get("x-served-by").map(String::as_str)
    }

    pub fn ok(&self) -> bool {
        self.code == "OK"
    }

    pub fn summary(&self) -> String {
        format!(
            "{} {} {:?} from {:?} in {} ms",
            self.id,
            self.code,
            self.details,
            self.served_by(),
            self.ms
        )
    }
}

/// Calls `detour.e2e.Echo` at `target` with `authority` as the `:authority`.
pub struct GrpcClient {
    target: SocketAddr,
    authority: String,
}

impl GrpcClient {
    pub fn new(target: SocketAddr, authority: &str) -> GrpcClient {
        GrpcClient {
            target,
            authority: authority.to_string(),
        }
    }

    fn command(&self) -> Result<Command> {
        let mut command = Command::new(python()?);
        command
            .arg(script("client.py"))
            .arg("--target")
            .arg(self.target.to_string())
            .arg("--authority")
            .arg(&self.authority);
        Ok(command)
    }

    /// One unary call; with `status`, the server ends it with that status (a
    /// `grpc.StatusCode` name, e.g. `NOT_FOUND`) and `message`.
    pub fn unary(&self, id: &str, status: Option<(&str, &str)>) -> Result<Call> {
        let mut command = self.command()?;
        command.args(["unary", "--id", id]);
        if let Some((code, message)) = status {
            command.args(["--status", code, "--message", message]);
        }
        run(command)
    }

    /// One server-streaming call asking for `count` messages of `size` bytes.
    pub fn stream(&self, id: &str, count: usize, size: usize) -> Result<Call> {
        let mut command = self.command()?;
        command.args(["stream", "--id", id]);
        command.args(["--count", &count.to_string(), "--size", &size.to_string()]);
        run(command)
    }

    /// Starts unary calls from `concurrency` threads for `seconds`, every finished call
    /// appended to `out` as it finishes ([`read_calls`]); the process log is `log`.
    pub fn start_load(
        &self,
        seconds: f64,
        concurrency: usize,
        out: &Path,
        log: PathBuf,
    ) -> Result<Process> {
        ProcessSpec::new("grpc-load", python()?, log)
            .arg(script("client.py"))
            .arg("--target")
            .arg(self.target.to_string())
            .arg("--authority")
            .arg(&self.authority)
            .arg("load")
            .arg("--seconds")
            .arg(seconds.to_string())
            .arg("--concurrency")
            .arg(concurrency.to_string())
            .arg("--out")
            .arg(out)
            .spawn()
    }
}

fn run(mut command: Command) -> Result<Call> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "the gRPC client's output: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The calls a load wrote so far (a missing file: none yet). A line being written as
/// this reads is left for the next read.
pub fn read_calls(path: &Path) -> Result<Vec<Call>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}
