//! The `detour` binary: its one-shot commands (`check`, `render envoy`, `explain`,
//! `certs init`) and the `serve` process the Envoys fetch their tables from.

use crate::certs::{Certs, ClusterRole};
use crate::client::{HttpClient, Reply, Request};
use crate::out::OutDir;
use crate::paths::detour_bin;
use crate::process::{Process, ProcessSpec};
use crate::ready::wait_answering;
use anyhow::{Context, Result, bail};
use detour_filter::table::wire::TableDoc;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Mutex;
use std::time::Duration;

/// How long `serve` may take to answer `/readyz`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// `:authority` the harness sends to the controller (the filter's default).
const AUTHORITY: &str = "detour-controller";

/// What a one-shot command printed and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// The output if the command succeeded, else an error quoting stderr.
    pub fn success(self, what: &str) -> Result<CliOutput> {
        if !self.status.success() {
            bail!(
                "{what} failed ({}):\n{}{}",
                self.status,
                self.stderr,
                self.stdout
            );
        }
        Ok(self)
    }
}

/// The arguments of `detour render envoy`.
#[derive(Debug, Clone)]
pub struct RenderEnvoy {
    pub config: PathBuf,
    pub cluster: String,
    pub ingress: SocketAddr,
    pub admin: SocketAddr,
    pub controller: SocketAddr,
    pub wasm: PathBuf,
    /// `--certs DIR` (from `detour certs init`): mTLS on every hop.
    pub certs: Option<PathBuf>,
    /// `--gateway-address`: which of the cluster's gateway addresses this Envoy's
    /// gateway listener binds; `None`: the first.
    pub gateway_address: Option<SocketAddr>,
}

/// The `detour` command line.
#[derive(Debug, Clone)]
pub struct Detour {
    bin: PathBuf,
}

impl Detour {
    /// The binary [`detour_bin`] finds (`make build`).
    pub fn locate() -> Result<Detour> {
        Ok(Detour { bin: detour_bin()? })
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Runs `detour ARGS` to completion; a non-zero exit is returned, not an error.
    pub fn run<I, A>(&self, args: I) -> Result<CliOutput>
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let output = Command::new(&self.bin)
            .args(&args)
            .output()
            .with_context(|| format!("running {} {args:?}", self.bin.display()))?;
        Ok(CliOutput {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// `detour check --config DIR`.
    pub fn check(&self, config: &Path) -> Result<CliOutput> {
        self.run([OsString::from("check"), "--config".into(), config.into()])
    }

    /// `detour explain --config DIR --cluster C --service NS/NAME`.
    pub fn explain(&self, config: &Path, cluster: &str, service: &str) -> Result<CliOutput> {
        self.run([
            OsString::from("explain"),
            "--config".into(),
            config.into(),
            "--cluster".into(),
            cluster.into(),
            "--service".into(),
            service.into(),
        ])
    }

    /// `detour status --controller URL ARGS...`, e.g. `--output json`.
    pub fn status(&self, controller: &str, args: &[&str]) -> Result<CliOutput> {
        let mut all: Vec<OsString> =
            vec!["status".into(), "--controller".into(), controller.into()];
        all.extend(args.iter().map(OsString::from));
        self.run(all)
    }

    /// `detour certs init --config DIR --out DIR`.
    pub fn certs_init(&self, config: &Path, out: &Path) -> Result<()> {
        self.certs_init_with(config, out, &[])
    }

    /// `detour certs init --config CONFIG --out OUT ARGS...`.
    pub fn certs_init_with(&self, config: &Path, out: &Path, args: &[&str]) -> Result<()> {
        let mut all = vec![
            OsString::from("certs"),
            "init".into(),
            "--config".into(),
            config.into(),
            "--out".into(),
            out.into(),
        ];
        all.extend(args.iter().map(OsString::from));
        self.run(all)?.success("detour certs init")?;
        Ok(())
    }

    /// `detour render envoy ...`: the Envoy config (YAML) it prints.
    pub fn render_envoy(&self, render: &RenderEnvoy) -> Result<String> {
        let mut args: Vec<OsString> = vec![
            "render".into(),
            "envoy".into(),
            "--config".into(),
            render.config.clone().into(),
            "--cluster".into(),
            render.cluster.clone().into(),
            "--ingress".into(),
            render.ingress.to_string().into(),
            "--admin".into(),
            render.admin.to_string().into(),
            "--controller".into(),
            render.controller.to_string().into(),
            "--wasm".into(),
            render.wasm.clone().into(),
        ];
        if let Some(certs) = &render.certs {
            args.push("--certs".into());
            args.push(certs.clone().into());
        }
        if let Some(address) = render.gateway_address {
            args.push("--gateway-address".into());
            args.push(address.to_string().into());
        }
        let output = self
            .run(args)?
            .success(&format!("detour render envoy --cluster {}", render.cluster))?;
        Ok(output.stdout)
    }
}

/// How to run `detour serve`.
#[derive(Debug, Clone)]
pub struct ControllerSpec {
    pub config: PathBuf,
    /// The table API (`--listen`).
    pub listen: SocketAddr,
    /// `/healthz`, `/readyz` and `/metrics` (`--ops-listen`), always plain HTTP.
    pub ops_listen: SocketAddr,
    /// `--certs DIR`: the table API over mTLS, and health probes through the gateways
    /// presenting the controller's probe certificate.
    pub certs: Option<Certs>,
}

/// A running `detour serve --config DIR`.
pub struct Controller {
    process: Process,
    listen: SocketAddr,
    ops_listen: SocketAddr,
    ops: HttpClient,
    certs: Option<Certs>,
    /// One table client per member cluster: over mTLS, only cluster C's table
    /// certificate may read C's table.
    tables: Mutex<BTreeMap<String, HttpClient>>,
}

impl Controller {
    /// Starts `serve` and waits until `/readyz` answers 200. Log: `controller.log`.
    pub fn start(spec: &ControllerSpec, out: &OutDir) -> Result<Controller> {
        let mut controller = Controller::spawn(spec, out)?;
        controller.wait_ready()?;
        Ok(controller)
    }

    /// Starts `serve` without waiting (with everything else at once);
    /// [`Controller::wait_ready`] waits.
    pub fn spawn(spec: &ControllerSpec, out: &OutDir) -> Result<Controller> {
        let mut process = ProcessSpec::new("controller", detour_bin()?, out.file("controller.log"))
            // Plain text: the log is a file, read by people after the fact.
            .env("NO_COLOR", "1")
            .arg("serve")
            .arg("--config")
            .arg(&spec.config)
            .arg("--listen")
            .arg(spec.listen.to_string())
            .arg("--ops-listen")
            .arg(spec.ops_listen.to_string());
        if let Some(certs) = &spec.certs {
            process = process.arg("--certs").arg(certs.root());
        }
        Ok(Controller {
            process: process.spawn()?,
            listen: spec.listen,
            ops_listen: spec.ops_listen,
            ops: HttpClient::new(spec.ops_listen, AUTHORITY).with_timeout(Duration::from_secs(5)),
            certs: spec.certs.clone(),
            tables: Mutex::new(BTreeMap::new()),
        })
    }

    /// The table API's address.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// `http://ADDR` of the plain operations listener: `/metrics`, the status API
    /// (`/v1/status`), the status page (`/ui/`); what `detour status --controller` takes.
    pub fn ops_url(&self) -> String {
        format!("http://{}", self.ops_listen)
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// SIGKILL.
    pub fn kill(&mut self) -> Result<()> {
        self.process.kill()
    }

    /// Starts it again on the same config and address, and waits until ready.
    pub fn restart(&mut self) -> Result<()> {
        self.process.restart()?;
        self.wait_ready()
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self) -> Result<()> {
        wait_answering(&mut self.process, &self.ops, "/readyz", START_TIMEOUT)
    }

    /// A GET to the plain operations listener (`/healthz`, `/readyz`, `/metrics`,
    /// `/v1/status`).
    pub fn get(&self, path: &str) -> Result<crate::client::Reply> {
        self.ops.get(path)
    }

    /// A client of the table API as `cluster`'s Envoy is one: over mTLS it presents
    /// `cluster`'s table certificate.
    pub fn table_client(&self, cluster: &str) -> Result<HttpClient> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = tables.get(cluster) {
            return Ok(client.clone());
        }
        let mut client =
            HttpClient::new(self.listen, AUTHORITY).with_timeout(Duration::from_secs(5));
        if let Some(certs) = &self.certs {
            let pair = certs.cluster(cluster, ClusterRole::Table);
            client = client.with_tls(certs.client_config(&pair)?);
        }
        tables.insert(cluster.to_string(), client.clone());
        Ok(client)
    }

    /// The current table for `cluster`, as the filter would fetch it.
    pub fn table(&self, cluster: &str) -> Result<TableDoc> {
        let reply = self
            .table_client(cluster)?
            .get(&format!("/v1/tables/{cluster}"))?;
        parse_table(cluster, &reply)
    }

    /// Long-polls `cluster`'s table as the filter does: returns the first table whose
    /// version is not `version` (at once if the current one differs), or an error if
    /// none comes within `wait`.
    pub fn next_table(&self, cluster: &str, version: &str, wait: Duration) -> Result<TableDoc> {
        let client = self
            .table_client(cluster)?
            .with_timeout(wait + Duration::from_secs(5));
        let request = Request::get(&format!("/v1/tables/{cluster}?wait={}ms", wait.as_millis()))
            .header("if-none-match", &format!("\"{version}\""));
        let reply = client.send(request)?;
        if reply.status == 304 {
            bail!("{cluster}'s table stayed at version {version} for {wait:?}");
        }
        parse_table(cluster, &reply)
    }
}

fn parse_table(cluster: &str, reply: &Reply) -> Result<TableDoc> {
    if reply.status != 200 {
        bail!(
            "GET /v1/tables/{cluster}: {} {}",
            reply.status,
            reply.body_text()
        );
    }
    serde_json::from_slice(&reply.body).with_context(|| {
        format!(
            "table of {cluster} is not a detour table: {}",
            reply.body_text()
        )
    })
}
