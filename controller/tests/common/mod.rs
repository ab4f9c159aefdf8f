//! Helpers for the integration tests: the real `detour` binary, config directories,
//! stand-in gateways and services, and an HTTP client.
#![allow(dead_code)] // each test file uses a different part

#[path = "../../src/testing.rs"]
pub mod testing;

pub mod envoy;
pub mod tls;

use detour::client::HttpClient;
#[allow(unused_imports)]
pub use detour_core::testing::EXAMPLE;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
#[allow(unused_imports)]
pub use testing::{FakeGateway, eventually};

pub const BIN: &str = env!("CARGO_BIN_EXE_detour");

/// The tests check targets every 20ms to see a failure quickly, under the 100ms the
/// controller allows by default: every command they run allows 10ms.
const MIN_HEALTH_CHECK_INTERVAL: (&str, &str) = ("DETOUR_MIN_HEALTH_CHECK_INTERVAL", "10ms");

/// Runs `detour ARGS...` to completion.
pub fn detour(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .env(MIN_HEALTH_CHECK_INTERVAL.0, MIN_HEALTH_CHECK_INTERVAL.1)
        .output()
        .expect("run detour")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The example's two files (`clusters.yaml`, `foo.yaml`) as written in the repository.
pub fn example_files() -> (String, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config");
    (
        std::fs::read_to_string(dir.join("clusters.yaml")).unwrap(),
        std::fs::read_to_string(dir.join("foo.yaml")).unwrap(),
    )
}

/// A temporary config directory.
pub struct ConfigDir {
    dir: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new(files: &[(&str, &str)]) -> ConfigDir {
        let c = ConfigDir {
            dir: tempfile::tempdir().unwrap(),
        };
        for (name, text) in files {
            c.write(name, text);
        }
        c
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn str(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces a file the way editors do: write aside, then rename over it.
    pub fn write(&self, name: &str, text: &str) {
        let aside = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, self.file(name)).unwrap();
    }
}

/// Three stand-in gateways (east's, west's, south's) answering 200.
pub async fn three_gateways() -> [FakeGateway; 3] {
    [
        FakeGateway::start().await,
        FakeGateway::start().await,
        FakeGateway::start().await,
    ]
}

/// A config directory with the example [`topology`] checked through `gateways`.
pub fn example_config(
    gateways: &[FakeGateway; 3],
    interval_ms: u64,
    stable_for: &str,
) -> ConfigDir {
    let (clusters, foo) = topology(
        [gateways[0].addr, gateways[1].addr, gateways[2].addr],
        interval_ms,
        stable_for,
    );
    ConfigDir::new(&[("clusters.yaml", &clusters), ("foo.yaml", &foo)])
}

/// The example topology with each cluster's gateway at a given address and health
/// checks every `interval_ms` (thresholds 1/1 unless the text says otherwise), failback
/// after `stable_for`.
pub fn topology(gateways: [SocketAddr; 3], interval_ms: u64, stable_for: &str) -> (String, String) {
    let (mut clusters, foo) = example_files();
    for (i, gw) in gateways.iter().enumerate() {
        let original = format!("{{address: 127.0.{}.1, port: 15443}}", i + 1);
        assert!(clusters.contains(&original));
        clusters = clusters.replace(
            &original,
            &format!("{{address: {}, port: {}}}", gw.ip(), gw.port()),
        );
    }
    let foo = foo
        .replace(
            "healthCheck: {path: /healthz, interval: 1s, timeout: 500ms,\n                unhealthyThreshold: 2, healthyThreshold: 2}",
            &format!(
                "healthCheck: {{path: /healthz, interval: {interval_ms}ms, timeout: {interval_ms}ms,\n                unhealthyThreshold: 1, healthyThreshold: 1}}"
            ),
        )
        .replace("stableFor: 10s", &format!("stableFor: {stable_for}"));
    assert!(foo.contains(&format!("interval: {interval_ms}ms")));
    (clusters, foo)
}

/// A running `detour serve`, killed on drop. Logs are JSON, collected line by line.
pub struct Controller {
    child: Child,
    /// The table API.
    pub addr: SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics` (the same as `addr` without `--ops-listen`).
    pub ops: SocketAddr,
    logs: Arc<Mutex<Vec<Value>>>,
    client: HttpClient,
}

pub struct Response {
    pub status: u16,
    pub etag: Option<String>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

impl Controller {
    /// Starts `detour serve` on a free port; returns once it listens.
    pub async fn start(config: &Path) -> Controller {
        Controller::try_start(config)
            .await
            .unwrap_or_else(|logs| panic!("the controller did not start:\n{logs}"))
    }

    /// Starts it, or returns its stderr if it exits first.
    pub async fn try_start(config: &Path) -> Result<Controller, String> {
        Controller::try_start_with(config, &[]).await
    }

    /// Starts it with extra arguments (e.g. `--certs DIR --ops-listen 127.0.0.1:0`).
    pub async fn start_with(config: &Path, args: &[&str]) -> Controller {
        Controller::try_start_with(config, args)
            .await
            .unwrap_or_else(|logs| panic!("the controller did not start:\n{logs}"))
    }

    /// Starts it with extra arguments, or returns its stderr if it exits first.
    pub async fn try_start_with(config: &Path, args: &[&str]) -> Result<Controller, String> {
        let separate_ops = args.contains(&"--ops-listen");
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
            .args(["--reload-interval", "25ms"])
            .args(args)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .env(MIN_HEALTH_CHECK_INTERVAL.0, MIN_HEALTH_CHECK_INTERVAL.1)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs: Arc<Mutex<Vec<Value>>> = Arc::default();
        let raw: Arc<Mutex<String>> = Arc::default();
        let stderr = child.stderr.take().unwrap();
        {
            let logs = logs.clone();
            let raw = raw.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    raw.lock().unwrap().push_str(&format!("{line}\n"));
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        logs.lock().unwrap().push(v);
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let address_of = |logs: &[Value], prefix: &str| {
            logs.iter().find_map(|l| {
                (l["message"].as_str()?.starts_with(prefix))
                    .then(|| l["address"].as_str()?.parse::<SocketAddr>().ok())
                    .flatten()
            })
        };
        loop {
            let (api, ops) = {
                let logs = logs.lock().unwrap();
                let api = address_of(&logs, "serving the table API");
                let ops = if separate_ops {
                    address_of(&logs, "serving /healthz")
                } else {
                    api
                };
                (api, ops)
            };
            if let (Some(addr), Some(ops)) = (api, ops) {
                return Ok(Controller {
                    child,
                    addr,
                    ops,
                    logs,
                    client: HttpClient::fresh_connections(),
                });
            }
            if let Ok(Some(_)) = child.try_wait() {
                tokio::time::sleep(Duration::from_millis(50)).await; // let the reader finish
                return Err(raw.lock().unwrap().clone());
            }
            assert!(Instant::now() < deadline, "no 'serving' log line in 20s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits for a log line matching `pred`.
    pub async fn wait_log(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        eventually(what, Duration::from_secs(10), || {
            self.logs.lock().unwrap().iter().any(&pred)
        })
        .await;
        self.logs
            .lock()
            .unwrap()
            .iter()
            .find(|l| pred(l))
            .cloned()
            .unwrap()
    }

    pub async fn get(&self, path: &str, etag: Option<&str>) -> Response {
        let url = format!("http://{}{path}", self.addr);
        let quoted = etag.map(|e| format!("\"{e}\""));
        let headers: Vec<(&str, &str)> = quoted
            .iter()
            .map(|q| ("if-none-match", q.as_str()))
            .collect();
        let (resp, body) = self
            .client
            .get_body(&url, &headers, Duration::from_secs(70), 1 << 22)
            .await
            .unwrap();
        Response {
            status: resp.status().as_u16(),
            etag: resp
                .headers()
                .get("etag")
                .map(|v| v.to_str().unwrap().trim_matches('"').to_string()),
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// Waits (up to 10s) until `/readyz` says ready: the first tables are published.
    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.ops);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = self
                .client
                .get_body(&url, &[], Duration::from_secs(5), 1 << 16)
                .await
                .is_ok_and(|(r, _)| r.status().as_u16() == 200);
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "the controller never got ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.ops);
        let (_, body) = self
            .client
            .get_body(&url, &[], Duration::from_secs(10), 1 << 22)
            .await
            .unwrap();
        String::from_utf8_lossy(&body).into_owned()
    }

    /// Every line the controller logged so far, as written.
    pub fn raw_logs(&self) -> String {
        self.logs()
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The health of each target of east's scheme, in group order.
    /// Empty while there is no table yet (the first round of checks is not done).
    pub async fn east_health(&self) -> Vec<String> {
        let reply = self.get("/v1/tables/east", None).await;
        if reply.status == 503 {
            return Vec::new();
        }
        let table = reply.json();
        table["schemes"][0]["groups"]
            .as_array()
            .unwrap_or_else(|| panic!("{} {table}", reply.status))
            .iter()
            .flat_map(|g| g.as_array().unwrap().iter())
            .map(|t| t["health"].as_str().unwrap().to_string())
            .collect()
    }

    /// Waits until east's table shows these healths (primary, west, south).
    pub async fn wait_east_health(&self, want: [&str; 3]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.east_health().await;
            if now == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "east's table shows {now:?}, not {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Controller {
    /// Sends SIGTERM and waits (up to 10s) for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit 10s after SIGTERM");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
