//! Envoy processes: the pinned build (`make envoy`), started as production would run it
//! except for logging to a file, with two workers so cross-worker behaviour is exercised.

use crate::client::HttpClient;
use crate::envoy_log;
use crate::out::OutDir;
use crate::paths::envoy_bin;
use crate::process::{Process, ProcessSpec};
use crate::ready::wait_answering;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
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
    /// `--component-log-level`: by default the filter's own debug lines (`wasm:debug`),
    /// one per worker VM and table version, and one per replay, so a log shows which
    /// worker did what when.
    pub component_log_level: String,
}

impl EnvoySpec {
    pub fn new(name: &str, config: &Path, admin: SocketAddr) -> EnvoySpec {
        EnvoySpec {
            name: name.to_string(),
            config: config.to_path_buf(),
            admin,
            concurrency: 2,
            log_level: "info".to_string(),
            component_log_level: "wasm:debug".to_string(),
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
            // Log times in UTC, so that tests can compare them with the clock
            // ([`crate::envoy_log`]).
            .env("TZ", "UTC")
            .arg("--config-path")
            .arg(&spec.config)
            .arg("--concurrency")
            .arg(spec.concurrency.to_string())
            // Envoys side by side need distinct shared-memory base ids.
            .arg("--use-dynamic-base-id")
            .arg("--log-level")
            .arg(&spec.log_level)
            .arg("--component-log-level")
            .arg(&spec.component_log_level)
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

    /// Every sample of the admin `/stats/prometheus`, the endpoint users scrape:
    /// `(name, labels, value)`, e.g. `("detour_replay_ok", "", 3.0)`.
    pub fn prometheus(&self) -> Result<Vec<(String, String, f64)>> {
        Ok(parse_prometheus(&self.admin_get("/stats/prometheus")?))
    }

    /// The value of one metric of `/stats/prometheus`, summed over its label sets;
    /// `None` if Envoy exports no such metric.
    pub fn prometheus_value(&self, name: &str) -> Result<Option<f64>> {
        let samples: Vec<f64> = self
            .prometheus()?
            .into_iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, _, v)| v)
            .collect();
        Ok((!samples.is_empty()).then(|| samples.iter().sum()))
    }

    /// One metric of `/stats/prometheus` (summed over its label sets), as a user's
    /// Prometheus scrapes it, e.g. `detour_replay_ok`; an error when there is no such
    /// metric, so a misspelt name cannot pass for a zero.
    pub fn metric(&self, name: &str) -> Result<f64> {
        self.prometheus_value(name)?
            .with_context(|| format!("{}'s /stats/prometheus has no {name}", self.name))
    }

    /// One counter or gauge, `None` if Envoy has no such stat.
    pub fn stat(&self, name: &str) -> Result<Option<u64>> {
        // Filtered by Envoy: tests poll stats every few milliseconds, and the whole
        // list is long.
        let text = self.admin_get(&format!(
            "/stats?filter={}",
            percent_encode(&format!("^{}$", regex_escape(name)))
        ))?;
        Ok(text.lines().find_map(|line| {
            let (n, value) = line.split_once(": ")?;
            (n == name).then(|| value.trim().parse().ok()).flatten()
        }))
    }

    /// The table version detour's filter in this Envoy holds, as its gauge shows it;
    /// `None` before the filter has defined its stats.
    pub fn filter_table_version(&self) -> Result<Option<u64>> {
        self.stat(FILTER_TABLE_VERSION_STAT)
    }

    /// Which table version each of the filter's VMs (the main thread's and one per
    /// worker, by thread id) routes by, from their log lines; `None` for a VM that has
    /// no table yet. The gauge shows one VM's table; the others adopt it on their next
    /// tick, and a test that acts before then meets a worker still on the old table.
    pub fn tables_by_vm(&self) -> Result<BTreeMap<u64, Option<String>>> {
        let mut vms = BTreeMap::new();
        for line in envoy_log::read(self.process.log_path())? {
            if line.text.contains(envoy_log::CONFIGURED) {
                vms.entry(line.thread).or_insert(None);
            } else if let Some(version) = envoy_log::adopted_version(&line.text) {
                vms.insert(line.thread, Some(version.to_string()));
            }
        }
        Ok(vms)
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

/// `text` as a regular expression matching exactly it.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `text` for a query string: everything but unreserved characters percent-encoded.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Parses Prometheus' text format: `name{labels} value` lines; comments and lines that
/// do not parse are skipped.
pub fn parse_prometheus(text: &str) -> Vec<(String, String, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            Some((name.to_string(), labels.to_string(), value))
        })
        .collect()
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

/// `rendered` (a member cluster's config from `detour render envoy`) for one more Envoy
/// of that cluster: the ingress (with the filter) on `listen`, the admin on `admin`, and
/// no east-west gateway listener (the cluster's own Envoy holds that address). Returned
/// as YAML to change further (e.g. benchmarks take the filter out); write it with
/// `serde_norway::to_string`.
pub fn ingress_only(
    rendered: &str,
    listen: SocketAddr,
    admin: SocketAddr,
) -> Result<serde_norway::Value> {
    let mut config: serde_norway::Value =
        serde_norway::from_str(rendered).context("parsing the rendered Envoy config")?;
    let address = |a: SocketAddr| {
        serde_norway::from_str::<serde_norway::Value>(&format!(
            "{{socket_address: {{address: {}, port_value: {}}}}}",
            a.ip(),
            a.port()
        ))
    };
    config["admin"]["address"] = address(admin)?;
    let listeners = config["static_resources"]["listeners"]
        .as_sequence_mut()
        .context("the rendered config has no listeners")?;
    listeners.retain(|l| l["name"].as_str() != Some("detour_gateway"));
    let ingress = listeners
        .iter_mut()
        .find(|l| l["name"].as_str() == Some("detour_ingress"))
        .context("the rendered config has no detour_ingress listener")?;
    ingress["address"] = address(listen)?;
    Ok(config)
}

/// `rendered` (an Envoy config as `detour render envoy` writes it) with `fields` merged
/// into the configuration of every proxy-wasm filter as a JSON merge patch (RFC 7386):
/// objects merge key by key, `null` removes a key, anything else replaces the value.
pub fn merge_filter_config(rendered: &str, fields: &serde_json::Value) -> Result<String> {
    let mut config: serde_norway::Value =
        serde_norway::from_str(rendered).context("parsing the rendered Envoy config")?;
    let mut merged = 0;
    visit_wasm_configs(&mut config, &mut |value| {
        let mut filter: serde_json::Value = serde_json::from_str(value)
            .with_context(|| format!("the rendered filter configuration {value:?}"))?;
        merge_json(&mut filter, fields);
        *value = filter.to_string();
        merged += 1;
        Ok(())
    })?;
    if merged == 0 {
        bail!("the rendered config has no proxy-wasm filter to configure");
    }
    Ok(serde_norway::to_string(&config)?)
}

/// Calls `f` with the configuration string of every `envoy.filters.http.wasm` filter.
fn visit_wasm_configs(
    value: &mut serde_norway::Value,
    f: &mut dyn FnMut(&mut String) -> Result<()>,
) -> Result<()> {
    match value {
        serde_norway::Value::Mapping(map) => {
            let is_wasm =
                map.get("name").and_then(|n| n.as_str()) == Some("envoy.filters.http.wasm");
            if is_wasm {
                let config = map
                    .get_mut("typed_config")
                    .and_then(|c| c.get_mut("config"))
                    .and_then(|c| c.get_mut("configuration"))
                    .and_then(|c| c.get_mut("value"));
                if let Some(serde_norway::Value::String(text)) = config {
                    return f(text);
                }
            }
            for (_, v) in map.iter_mut() {
                visit_wasm_configs(v, f)?;
            }
            Ok(())
        }
        serde_norway::Value::Sequence(items) => {
            items.iter_mut().try_for_each(|v| visit_wasm_configs(v, f))
        }
        _ => Ok(()),
    }
}

fn merge_json(into: &mut serde_json::Value, patch: &serde_json::Value) {
    let serde_json::Value::Object(patch) = patch else {
        *into = patch.clone();
        return;
    };
    if !into.is_object() {
        *into = serde_json::Value::Object(serde_json::Map::new());
    }
    if let serde_json::Value::Object(into) = into {
        for (key, value) in patch {
            if value.is_null() {
                into.remove(key);
            } else {
                merge_json(
                    into.entry(key.clone()).or_insert(serde_json::Value::Null),
                    value,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_names_become_exact_filters() {
        assert_eq!(
            regex_escape("cluster.detour|west|apps|foo.ssl.handshake"),
            r"cluster\.detour\|west\|apps\|foo\.ssl\.handshake"
        );
        assert_eq!(percent_encode(r"^a\.b|c$"), "%5Ea%5C.b%7Cc%24");
    }

    #[test]
    fn a_second_ingress_keeps_everything_but_the_gateway_and_the_addresses() {
        let rendered = r#"
admin: {address: {socket_address: {address: 127.0.1.1, port_value: 1}}}
static_resources:
  listeners:
  - {name: detour_ingress, address: {socket_address: {address: 127.0.1.1, port_value: 2}}, x: kept}
  - {name: detour_gateway, address: {socket_address: {address: 127.0.1.1, port_value: 3}}}
  clusters: [{name: c}]
"#;
        let config = ingress_only(
            rendered,
            "127.0.1.1:20".parse().unwrap(),
            "127.0.1.1:10".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(
            config["admin"]["address"]["socket_address"]["port_value"].as_u64(),
            Some(10)
        );
        let listeners = config["static_resources"]["listeners"]
            .as_sequence()
            .unwrap();
        assert_eq!(listeners.len(), 1);
        assert_eq!(
            listeners[0]["address"]["socket_address"]["port_value"].as_u64(),
            Some(20)
        );
        assert_eq!(listeners[0]["x"].as_str(), Some("kept"));
        assert_eq!(
            config["static_resources"]["clusters"][0]["name"].as_str(),
            Some("c")
        );
        assert!(
            ingress_only(
                "admin: {}",
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap()
            )
            .is_err()
        );
    }

    #[test]
    fn filter_fields_merge_into_the_rendered_configuration() {
        let rendered = r#"
static_resources:
  listeners:
  - name: detour_ingress
    filter_chains:
    - filters:
      - typed_config:
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              config:
                configuration:
                  value: '{"cluster":"east","controller":{"envoyCluster":"c","authority":"a"}}'
          - name: envoy.filters.http.router
"#;
        let fields = serde_json::json!({"passive": {"enabled": false},
            "controller": {"longPoll": "0s", "authority": null}});
        let merged: serde_norway::Value =
            serde_norway::from_str(&merge_filter_config(rendered, &fields).unwrap()).unwrap();
        let value = merged["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["http_filters"][0]["typed_config"]["config"]["configuration"]["value"]
            .as_str()
            .unwrap();
        let config: serde_json::Value = serde_json::from_str(value).unwrap();
        assert_eq!(
            config,
            serde_json::json!({"cluster": "east", "passive": {"enabled": false},
                "controller": {"envoyCluster": "c", "longPoll": "0s"}})
        );
        assert!(merge_filter_config("admin: {}", &fields).is_err());
    }

    #[test]
    fn prometheus_samples_are_read_with_and_without_labels() {
        let text = "# TYPE detour_replay_ok counter\n\
                    detour_replay_ok{} 3\n\
                    detour_table_version 42\n\
                    envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"x\"} 7\n\
                    garbage\n";
        assert_eq!(
            parse_prometheus(text),
            [
                ("detour_replay_ok".to_string(), String::new(), 3.0),
                ("detour_table_version".to_string(), String::new(), 42.0),
                (
                    "envoy_cluster_upstream_rq".to_string(),
                    "envoy_response_code=\"200\",envoy_cluster_name=\"x\"".to_string(),
                    7.0
                ),
            ]
        );
    }
}
