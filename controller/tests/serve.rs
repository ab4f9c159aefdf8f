//! `detour serve` as a process: the table API, hot reload, health in the tables.
// Test code: a failed unwrap is a failed test; `foo` is the example service's name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_names
)]

mod common;
use common::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Three healthy stand-in gateways and a controller checking them every `interval_ms`.
struct Setup {
    gateways: [FakeGateway; 3],
    config: ConfigDir,
    controller: Controller,
}

async fn setup(interval_ms: u64, stable_for: &str) -> Setup {
    let gateways = three_gateways().await;
    let config = example_config(&gateways, interval_ms, stable_for);
    let controller = Controller::start(config.path()).await;
    Setup {
        gateways,
        config,
        controller,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_api_serves_etags_304_long_polls_and_404() {
    let Setup {
        gateways: [_east, mut west, _south],
        controller: c,
        config: _config,
    } = setup(20, "0s").await;
    c.wait_east_health(["Healthy", "Healthy", "Healthy"]).await;
    // Every check went through the cluster's gateway with Host NAME.NS.
    assert!(west.hosts().iter().all(|h| h == "foo.apps"));

    let first = c.get("/v1/tables/east", None).await;
    assert_eq!(first.status, 200);
    let table = first.json();
    let version = table["version"].as_str().unwrap().to_string();
    assert_eq!(first.etag.as_deref(), Some(version.as_str()));
    assert_eq!(table["apiVersion"], "detour.dev/table/v1");
    assert_eq!(table["cluster"], "east");

    let again = c.get("/v1/tables/east", Some(&version)).await;
    assert_eq!(
        (again.status, again.etag.as_deref()),
        (304, Some(version.as_str()))
    );
    assert!(again.body.is_empty());

    // A long-poll that times out is a 304 after the wait.
    let started = Instant::now();
    let waited = c.get("/v1/tables/east?wait=300ms", Some(&version)).await;
    assert_eq!(waited.status, 304);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // A long-poll wakes with the new table when a target's health changes.
    let poll = {
        let addr = c.addr;
        let version = version.clone();
        tokio::spawn(async move {
            let client = detour::client::HttpClient::fresh_connections();
            let url = format!("http://{addr}/v1/tables/east?wait=30s");
            let tag = format!("\"{version}\"");
            let started = Instant::now();
            let (resp, body) = client
                .get_body(
                    &url,
                    &[("if-none-match", &tag)],
                    Duration::from_secs(40),
                    1 << 20,
                )
                .await
                .unwrap();
            (resp.status().as_u16(), body, started.elapsed())
        })
    };
    eventually("the poll is waiting", Duration::from_secs(5), || {
        futures_block(c.metrics()).contains("detour_long_polls_in_flight 1")
    })
    .await;
    west.stop().await;
    let (status, body, took) = poll.await.unwrap();
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(10), "{took:?}");
    let changed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_ne!(changed["version"].as_str().unwrap(), version);
    assert_eq!(changed["schemes"][0]["groups"][1][0]["health"], "Unhealthy");

    let missing = c.get("/v1/tables/nowhere", None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.json()["error"],
        "no member cluster named \"nowhere\""
    );
    let metrics = c.metrics().await;
    for needle in [
        "detour_table_requests_total{code=\"304\"} 2",
        "detour_table_requests_total{code=\"404\"} 1",
        "detour_long_polls_in_flight 0",
        "detour_target_health{cluster=\"west\",namespace=\"apps\",name=\"foo\",state=\"Unhealthy\"} 1",
        "detour_health_checks_total{cluster=\"west\",namespace=\"apps\",name=\"foo\",result=\"error\"}",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
}

/// Runs a future to completion from synchronous code inside the test runtime.
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_edit_changes_nothing_served_and_a_good_edit_does() {
    let s = setup(20, "0s").await;
    let c = &s.controller;
    c.wait_east_health(["Healthy", "Healthy", "Healthy"]).await;
    let before = c.get("/v1/tables/east", None).await;
    let foo = std::fs::read_to_string(s.config.file("foo.yaml")).unwrap();

    // A bad edit: an unknown cluster.
    s.config.write(
        "foo.yaml",
        &foo.replace("- {cluster: south,", "- {cluster: nowhere,"),
    );
    let file = s.config.file("foo.yaml");
    let expected = format!(
        "{}: document 1 (FailoverScheme apps/foo): spec.failoverGroups[1].priorityGroup[0].cluster: unknown cluster \"nowhere\"",
        file.display()
    );
    c.wait_log("the precise error is logged", |l| {
        l["message"] == "configuration refused"
            && l["problem"]
                .as_str()
                .is_some_and(|p| p.starts_with(&expected))
    })
    .await;
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("detour_config_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("detour_config_last_reload_successful 0"),
        "{metrics}"
    );
    let during = c.get("/v1/tables/east", None).await;
    assert_eq!(
        during.etag, before.etag,
        "the last good table keeps serving"
    );
    assert_eq!(during.body, before.body);
    // Health checks go on for the last good configuration.
    let checks = s.gateways[2].hosts().len();
    eventually("south is still checked", Duration::from_secs(5), || {
        s.gateways[2].hosts().len() > checks
    })
    .await;

    // A good edit: south leaves the scheme, and replays are narrowed.
    let good = foo
        .replace(
            "  - priorityGroup:\n    - {cluster: south, services: [{name: foo, namespace: apps}]}\n",
            "",
        )
        .replace("methods: [GET, HEAD, OPTIONS, PUT, DELETE]", "methods: [GET]");
    s.config.write("foo.yaml", &good);
    c.wait_log("the reload is logged", |l| {
        l["message"] == "configuration reloaded" && l["changed"] == true
    })
    .await;
    eventually("the table changes", Duration::from_secs(5), || {
        futures_block(c.get("/v1/tables/east", None)).etag != before.etag
    })
    .await;
    let after = c.get("/v1/tables/east", None).await.json();
    let scheme = &after["schemes"][0];
    assert_eq!(scheme["groups"].as_array().unwrap().len(), 2);
    assert_eq!(scheme["replay"]["methods"], serde_json::json!(["GET"]));
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("detour_config_reloads_total{result=\"success\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("detour_config_last_reload_successful 1"),
        "{metrics}"
    );
    // The target that left is no longer checked.
    let checks = s.gateways[2].hosts().len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(s.gateways[2].hosts().len() <= checks + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_thresholds_and_failback_is_damped() {
    let s = setup(20, "600ms").await;
    let c = &s.controller;
    let [east, _west, _south] = s.gateways;
    c.wait_east_health(["Healthy", "Healthy", "Healthy"]).await;

    // East's service fails behind its gateway (a gateway that is merely gone would not
    // move east's own traffic: its Envoy reaches the service without it).
    east.fail_service(true);
    c.wait_east_health(["Unhealthy", "Healthy", "Healthy"])
        .await;

    east.fail_service(false);
    let back = Instant::now();
    // The checker sees east again within a few intervals, but the table keeps it out
    // until it has been Healthy for stableFor.
    eventually("the checker sees east recover", Duration::from_secs(5), || {
        futures_block(c.metrics()).contains(
            "detour_target_health{cluster=\"east\",namespace=\"apps\",name=\"foo\",state=\"Healthy\"} 1",
        )
    })
    .await;
    // (Checked only while the window surely lasts, so a slow machine cannot fail it.)
    if back.elapsed() < Duration::from_millis(400) {
        assert_eq!(c.east_health().await[0], "Unhealthy", "damped");
    }
    c.wait_east_health(["Healthy", "Healthy", "Healthy"]).await;
    assert!(
        back.elapsed() >= Duration::from_millis(600),
        "failback after {:?}",
        back.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_first_round_of_checks() {
    let gateways = three_gateways().await;
    for g in &gateways {
        g.delay_ms.store(800, Ordering::Relaxed);
    }
    let config = example_config(&gateways, 2000, "0s");
    let c = Controller::start(config.path()).await;
    assert_eq!(c.get("/healthz", None).await.status, 200);
    assert_eq!(c.get("/readyz", None).await.status, 503);
    // No table before the first round ends (a restarted controller knows nothing a
    // table could say; the Envoys keep the one they hold).
    let table = c.get("/v1/tables/east", None).await;
    assert_eq!(table.status, 503);
    eventually("ready", Duration::from_secs(5), || {
        futures_block(c.get("/readyz", None)).status == 200
    })
    .await;
    // Its first table already has every verdict.
    assert_eq!(c.east_health().await, ["Healthy", "Healthy", "Healthy"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_at_start_is_refused() {
    let (clusters, foo) = example_files();
    let config = ConfigDir::new(&[
        ("clusters.yaml", &clusters),
        ("foo.yaml", &foo.replace("interval: 1s", "interval: often")),
    ]);
    let Err(stderr) = Controller::try_start(config.path()).await else {
        panic!("started with an invalid configuration");
    };
    assert!(
        stderr.contains("foo.yaml: document 1 (FailoverScheme apps/foo): spec.healthCheck.interval: invalid duration \"often\""),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_waiting_long_polls_and_exits_cleanly() {
    let Setup {
        controller: mut c,
        gateways: _g,
        config: _config,
    } = setup(20, "0s").await;
    // Tables are served from the end of the first round of checks.
    c.wait_east_health(["Healthy", "Healthy", "Healthy"]).await;
    let version = c.get("/v1/tables/west", None).await.etag.unwrap();
    let poll = {
        let url = format!("http://{}/v1/tables/west?wait=60s", c.addr);
        tokio::spawn(async move {
            let tag = format!("\"{version}\"");
            detour::client::HttpClient::fresh_connections()
                .get_body(
                    &url,
                    &[("if-none-match", &tag)],
                    Duration::from_secs(70),
                    1 << 20,
                )
                .await
                .map(|(r, _)| r.status().as_u16())
        })
    };
    eventually("the poll is waiting", Duration::from_secs(5), || {
        futures_block(c.metrics()).contains("detour_long_polls_in_flight 1")
    })
    .await;
    let started = Instant::now();
    let status = c.terminate().await;
    assert!(status.success(), "{status:?}");
    assert_eq!(poll.await.unwrap().unwrap(), 304);
    assert!(started.elapsed() < Duration::from_secs(5));
    c.wait_log("shutdown is logged", |l| l["message"] == "shutting down")
        .await;
}
