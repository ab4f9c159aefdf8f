//! `detour status` against a running `detour serve`: the picture and the JSON, a change
//! followed by `--watch`, colour only on a terminal without NO_COLOR, and a clear error
//! when there is no controller. (The e2e test `ui.rs` does the same with real Envoys.)
// Test code: a failed unwrap is a failed test; `foo` is the example service.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_names
)]

mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Three stand-in gateways answering 200, and a controller checking them every 50 ms.
struct Running {
    gateways: [FakeGateway; 3],
    controller: Controller,
    _config: ConfigDir,
}

impl Running {
    async fn start() -> Running {
        let gateways = three_gateways().await;
        let config = example_config(&gateways, 50, "0s");
        let controller = Controller::start(config.path()).await;
        controller
            .wait_east_health(["Healthy", "Healthy", "Healthy"])
            .await;
        // The status API follows the tables within its coalescing delay.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while controller.get("/v1/status", None).await.json()["summary"]["targets"]["healthy"] != 3
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the status API never said Healthy"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Running {
            gateways,
            controller,
            _config: config,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.controller.ops)
    }

    /// `detour status --controller URL ARGS`, which must succeed; its stdout.
    fn status(&self, args: &[&str]) -> String {
        let url = self.url();
        let mut all = vec!["status", "--controller", &url];
        all.extend(args);
        let out = detour(&all);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    }

    /// apps/foo in `detour status --output json`.
    fn foo(&self) -> Value {
        let doc: Value = serde_json::from_str(&self.status(&["--output", "json"])).unwrap();
        assert_eq!(doc["apiVersion"], "detour.dev/status/v1");
        doc["schemes"][0].clone()
    }

    /// East's gateway fails its checks: apps/foo goes to west.
    async fn fail_east(&self) {
        self.gateways[0].status.store(503, Ordering::Relaxed);
        eventually("apps/foo on group 1", Duration::from_secs(10), || {
            self.foo()["activeGroup"] == 1
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_picture_and_the_json_follow_a_failover() {
    let r = Running::start().await;
    let text = r.status(&[]);
    assert!(
        text.starts_with(&format!(
            "detour {} · 3 member cluster(s) · 1 scheme(s) · 0 failed over",
            r.url()
        )),
        "{text}"
    );
    for line in [
        "MEMBER CLUSTER  GATEWAY",
        "apps/foo  primary → east",
        "*P east Healthy",
        "| 1 west Healthy",
        "| 2 south Healthy",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
    assert!(!text.contains('\x1b'), "no colour into a pipe");
    let foo = r.foo();
    assert_eq!(foo["name"], "apps/foo");
    assert_eq!(foo["activeGroup"], 0);
    assert_eq!(foo["reason"], "primary-healthy");
    assert_eq!(foo["groups"][1][0]["cluster"], "west");

    r.fail_east().await;
    let text = r.status(&[]);
    for line in [
        "1 failed over",
        "apps/foo  group 1 → west",
        "P east Unhealthy",
        "FailedOver     apps/foo",
        "traffic for apps/foo moves from the primary (apps/foo in east: Unhealthy) to failover group 1 (apps/foo in west: Healthy)",
        "HealthChanged  apps/foo in east",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
    let foo = r.foo();
    assert_eq!(foo["groups"][0][0]["health"], "Unhealthy");
    assert_eq!(foo["groups"][0][0]["lastCheck"], "HTTP 503");
    let events = r.status(&["--events", "0"]);
    assert!(!events.contains("RECENT EVENTS"), "{events}");
}

/// Lines a child prints, collected as they come.
fn collect(child: &mut std::process::Child) -> Arc<Mutex<String>> {
    let out = Arc::new(Mutex::new(String::new()));
    let stdout = child.stdout.take().unwrap();
    let sink = out.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_each_change_as_it_happens() {
    let r = Running::start().await;
    let spawn = |args: &[&str]| {
        Command::new(BIN)
            .args(["status", "--watch", "--controller", &r.url()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut text = spawn(&[]);
    let mut json = spawn(&["--output", "json"]);
    let (text_out, json_out) = (collect(&mut text), collect(&mut json));
    eventually("a first picture", Duration::from_secs(10), || {
        text_out
            .lock()
            .unwrap()
            .contains("apps/foo  primary → east")
    })
    .await;

    r.fail_east().await;
    eventually(
        "the failover, without asking again",
        Duration::from_secs(10),
        || {
            text_out
                .lock()
                .unwrap()
                .contains("apps/foo  group 1 → west")
        },
    )
    .await;
    eventually("a JSON line for it", Duration::from_secs(10), || {
        json_out
            .lock()
            .unwrap()
            .lines()
            .any(|l| serde_json::from_str::<Value>(l).unwrap()["schemes"][0]["activeGroup"] == 1)
    })
    .await;
    // Into a pipe, one picture per version (not a redraw every few seconds), and one
    // document per line.
    let text_now = text_out.lock().unwrap().clone();
    assert!(!text_now.contains('\x1b'), "{text_now:?}");
    let lines = json_out.lock().unwrap().clone();
    let versions: Vec<String> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["version"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut unique = versions.clone();
    unique.dedup();
    assert_eq!(versions, unique, "each version once");
    let _ = text.kill();
    let _ = json.kill();
    let _ = text.wait();
    let _ = json.wait();
}

/// Runs `detour status` under a pseudo-terminal (`script`), with extra environment.
fn on_a_terminal(url: &str, env: &[(&str, &str)]) -> String {
    let line = format!("{BIN} status --controller {url}");
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("script(1) from util-linux");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colour_on_a_terminal_unless_no_color() {
    let r = Running::start().await;
    let url = r.url();
    let coloured = tokio::task::spawn_blocking({
        let url = url.clone();
        move || on_a_terminal(&url, &[])
    })
    .await
    .unwrap();
    assert!(coloured.contains("\x1b[32mHealthy\x1b[0m"), "{coloured:?}");
    let plain = tokio::task::spawn_blocking(move || on_a_terminal(&url, &[("NO_COLOR", "1")]))
        .await
        .unwrap();
    assert!(plain.contains("apps/foo  primary → east"), "{plain:?}");
    assert!(!plain.contains('\x1b'), "{plain:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_controller_is_a_clear_error() {
    // A port nothing listens on. (Not one bound and closed again: the other tests of
    // this file start controllers on ephemeral ports at the same time, and one of them
    // could be given that port in between.) Port 1 is privileged and unused here.
    let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    let out = detour(&["status", "--controller", &addr.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "error: cannot reach the detour controller at http://{addr} (cannot connect:"
        )),
        "{err}"
    );
    assert!(
        err.contains("--controller URL (default http://127.0.0.1:8080"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());

    // Something else answers there: a 404 says where the status API is.
    let other = FakeGateway::start().await;
    other.status.store(404, Ordering::Relaxed);
    let out = detour(&["status", "--controller", &format!("http://{}", other.addr)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no status API there"),
        "{}",
        stderr(&out)
    );
    other.status.store(200, Ordering::Relaxed);
    let out = detour(&["status", "--controller", &format!("http://{}", other.addr)]);
    assert!(
        stderr(&out).contains("did not answer with a detour status document"),
        "{}",
        stderr(&out)
    );
}
