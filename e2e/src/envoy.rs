//! Envoy processes: the pinned build (`make envoy`), started as production would run it
//! except for logging to a file, with two workers so cross-worker behaviour is exercised.

use crate::client::HttpClient;
use crate::out::OutDir;
use crate::paths::envoy_bin;
use crate::process::{Process, ProcessSpec};
use crate::ready::wait_answering;
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Envoy compiles the filter with V8 at start; on a busy two-core machine that takes a
/// few seconds per Envoy.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The filter's gauge of the table version it holds, as Envoy's `/stats` names it
/// (custom Wasm stats get the `wasmcustom.` prefix); the value is
/// [`detour_filter::metrics::version_gauge`] of the version.
pub const FILTER_TABLE_VERSION_STAT: &str = "wasmcustom.detour.table.version";

/// How to run one Envoy.
#[derive(Debug, Clone)]
pub struct EnvoySpec {
    /// Names the log (`envoy-<name>.log`); usually the member cluster.
    pub name: String,
    pub config: PathBuf,
    /// The admin address the config sets (the harness asks it whether Envoy is ready).
    pub admin: SocketAddr,
    /// Worker threads; DESIGN.md requires at least 2 in tests.
    pub concurrency: u32,
    pub log_level: String,
}

impl EnvoySpec {
    pub fn new(name: &str, config: &Path, admin: SocketAddr) -> EnvoySpec {
        EnvoySpec {
            name: name.to_string(),
            config: config.to_path_buf(),
            admin,
            concurrency: 2,
            log_level: "info".to_string(),
        }
    }
}

/// A running Envoy.
pub struct Envoy {
    name: String,
    process: Process,
    admin: HttpClient,
}

impl Envoy {
    /// Starts Envoy and waits until its admin `/ready` says LIVE (listeners are up).
    pub fn start(spec: &EnvoySpec, out: &OutDir) -> Result<Envoy> {
        let mut envoy = Envoy::spawn(spec, out)?;
        envoy.wait_ready()?;
        Ok(envoy)
    }

    /// Starts Envoy without waiting, so several can start at once; call
    /// [`Envoy::wait_ready`] on each afterwards.
    pub fn spawn(spec: &EnvoySpec, out: &OutDir) -> Result<Envoy> {
        let stem = format!("envoy-{}", spec.name);
        let process = ProcessSpec::new(&stem, envoy_bin()?, out.file(&format!("{stem}.log")))
            .arg("--config-path")
            .arg(&spec.config)
            .arg("--concurrency")
            .arg(spec.concurrency.to_string())
            // Envoys side by side need distinct shared-memory base ids.
            .arg("--use-dynamic-base-id")
            .arg("--log-level")
            .arg(&spec.log_level)
            .spawn()?;
        Ok(Envoy {
            name: spec.name.clone(),
            process,
            admin: HttpClient::new(spec.admin, "envoy-admin").with_timeout(Duration::from_secs(5)),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.addr()
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    pub fn wait_ready(&mut self) -> Result<()> {
        wait_answering(&mut self.process, &self.admin, "/ready", START_TIMEOUT)
    }

    /// SIGKILL.
    pub fn kill(&mut self) -> Result<()> {
        self.process.kill()
    }

    /// Starts it again with the same config and waits until ready.
    pub fn restart(&mut self) -> Result<()> {
        self.process.restart()?;
        self.wait_ready()
    }

    /// GET an admin path; non-200 is an error.
    pub fn admin_get(&self, path: &str) -> Result<String> {
        let reply = self.admin.get(path)?;
        if reply.status != 200 {
            bail!("{} admin {path}: {}", self.name, reply.summary());
        }
        Ok(reply.body_text())
    }

    /// The admin `/config_dump`, as JSON.
    pub fn config_dump(&self) -> Result<serde_json::Value> {
        let text = self.admin_get("/config_dump")?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} /config_dump is not JSON", self.name))
    }

    /// Counters and gauges from the admin `/stats` (histograms left out).
    pub fn stats(&self) -> Result<Vec<(String, u64)>> {
        let text = self.admin_get("/stats")?;
        Ok(text
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(": ")?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect())
    }

    /// One counter or gauge, `None` if Envoy has no such stat.
    pub fn stat(&self, name: &str) -> Result<Option<u64>> {
        Ok(self
            .stats()?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v))
    }

    /// The table version detour's filter in this Envoy holds, as its gauge shows it;
    /// `None` before the filter has defined its stats.
    pub fn filter_table_version(&self) -> Result<Option<u64>> {
        self.stat(FILTER_TABLE_VERSION_STAT)
    }

    /// Every local `.wasm` file any Wasm VM of this Envoy was configured with, as the
    /// config dump names it.
    pub fn loaded_wasm_files(&self) -> Result<Vec<String>> {
        let mut files = Vec::new();
        collect_wasm_filenames(&self.config_dump()?, &mut files);
        files.sort();
        files.dedup();
        Ok(files)
    }
}

/// Finds `vm_config.code.local.filename` wherever it appears (HTTP filters, bootstrap
/// extensions, …) without depending on the exact nesting of the dump.
fn collect_wasm_filenames(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(file) = map
                .get("code")
                .and_then(|code| code.get("local"))
                .and_then(|local| local.get("filename"))
                .and_then(|f| f.as_str())
            {
                found.push(file.to_string());
            }
            map.values().for_each(|v| collect_wasm_filenames(v, found));
        }
        serde_json::Value::Array(items) => {
            items.iter().for_each(|v| collect_wasm_filenames(v, found))
        }
        _ => {}
    }
}

/// A plain Envoy proxy without detour: `listen` → `upstream` for any Host. The harness
/// uses it to test itself without the controller; benchmarks use it as the baseline.
pub fn plain_proxy_config(listen: SocketAddr, admin: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        r#"admin:
  address: {{socket_address: {{address: {admin_ip}, port_value: {admin_port}}}}}
static_resources:
  listeners:
  - name: ingress
    address: {{socket_address: {{address: {listen_ip}, port_value: {listen_port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: any
              domains: ["*"]
              routes:
              - match: {{prefix: /}}
                route: {{cluster: upstream}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: {up_ip}, port_value: {up_port}}}}}
"#,
        admin_ip = admin.ip(),
        admin_port = admin.port(),
        listen_ip = listen.ip(),
        listen_port = listen.port(),
        up_ip = upstream.ip(),
        up_port = upstream.port(),
    )
}
