//! Envoy for the tests: the binary, filters to load, a process killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A proxy-wasm module that does almost nothing (every callback continues): Envoy loads
/// it as the detour filter, so these tests check the rendered Envoy config, not the
/// filter. Its one act: a request header `x-stub-route: CLUSTER` makes it set
/// `x-detour-route: CLUSTER`, as the real filter does on failover, so the tests can route
/// through the internal header (which Envoy removes when a client sends it).
const STUB_FILTER: &str = r#"
(module
  (import "env" "proxy_get_header_map_value"
    (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value"
    (func $replace_header (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "x-stub-route")
  (data (i32.const 32) "x-detour-route")
  (global $next (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $size)))
    (local.get $at))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    ;; map 0 = request headers; the value's address and length land at 64 and 68.
    (if (i32.eqz (call $get_header (i32.const 0) (i32.const 16) (i32.const 12)
                                   (i32.const 64) (i32.const 68)))
      (then (drop (call $replace_header (i32.const 0) (i32.const 32) (i32.const 14)
                                        (i32.load (i32.const 64)) (i32.load (i32.const 68))))))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32)))
"#;

pub fn envoy() -> Option<PathBuf> {
    let path = std::env::var_os("ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/envoy"));
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "\n!!!!!!!! SKIPPED: no Envoy at {} (run `make envoy`, or set ENVOY) !!!!!!!!\n",
            path.display()
        );
        None
    }
}

pub fn stub_filter(dir: &Path) -> PathBuf {
    let path = dir.join("stub_filter.wasm");
    std::fs::write(&path, wat::parse_str(STUB_FILTER).unwrap()).unwrap();
    path
}

/// The real filter, when it has been built (`DETOUR_WASM`, or where `cargo build
/// --release --target wasm32-wasip1` puts it): then Envoy also runs the filter's
/// `on_configure` on the rendered filter configuration.
pub fn real_filter() -> Option<PathBuf> {
    let path = std::env::var_os("DETOUR_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join("wasm32-wasip1/release/detour_filter.wasm")
        });
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "note: no built filter at {}; validated with the stub filter only",
            path.display()
        );
        None
    }
}

pub struct Envoy(pub Child);

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `envoy --mode validate`: Ok, or Envoy's complaint.
pub fn validate(envoy: &Path, config: &Path) -> Result<(), String> {
    let v = Command::new(envoy)
        .args(["--mode", "validate", "--use-dynamic-base-id"])
        .args(["-l", "warning", "-c"])
        .arg(config)
        .output()
        .unwrap();
    if v.status.success() && String::from_utf8_lossy(&v.stdout).contains("OK") {
        Ok(())
    } else {
        Err(format!(
            "{}\n{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        ))
    }
}

impl Envoy {
    /// Starts Envoy (two workers) on `config`, logging to `log`; returns once its admin
    /// on 127.0.0.1:`admin` says it is ready.
    pub async fn start(envoy: &Path, config: &Path, log: &Path, admin: u16) -> Envoy {
        let file = std::fs::File::create(log).unwrap();
        let child = Command::new(envoy)
            .args([
                "--use-dynamic-base-id",
                "--concurrency",
                "2",
                "-l",
                "info",
                "-c",
            ])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        let e = Envoy(child);
        let client = detour::client::HttpClient::fresh_connections();
        let url = format!("http://127.0.0.1:{admin}/ready");
        let log = log.to_path_buf();
        let mut ready = false;
        for _ in 0..750 {
            if let Ok((r, _)) = client
                .get_body(&url, &[], Duration::from_secs(1), 1024)
                .await
                && r.status() == 200
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            ready,
            "Envoy did not become ready:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        e
    }
}

/// One counter or gauge from Envoy's admin `/stats` (0 when absent).
pub async fn stat(admin: u16, name: &str) -> u64 {
    let client = detour::client::HttpClient::fresh_connections();
    let url = format!("http://127.0.0.1:{admin}/stats");
    let (_, body) = client
        .get_body(&url, &[], Duration::from_secs(5), 1 << 24)
        .await
        .unwrap();
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: "))?.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until `stat(admin, name) >= at_least`.
pub async fn wait_stat(admin: u16, name: &str, at_least: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = stat(admin, name).await;
        if now >= at_least {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Envoy stat {name} is {now}, not >= {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
