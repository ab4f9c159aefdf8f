//! `detour explain`: probing through gateways, or reading a running controller's table,
//! then the filter's own selection.
// Test code: a failed unwrap is a failed test; `foo` is the example service's name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_names
)]

mod common;
use common::*;

async fn explain(config: &ConfigDir, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<String> = ["explain", "--config", config.str(), "--cluster", "east"]
        .map(String::from)
        .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        detour(&args)
    })
    .await
    .unwrap()
}

fn config(g: &[FakeGateway; 3]) -> ConfigDir {
    example_config(g, 20, "0s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_every_target_and_decides_as_the_filter_does() {
    let gateways = three_gateways().await;
    let dir = config(&gateways);
    let [east, _west, _south] = gateways;

    let out = explain(&dir, &["--service", "apps/foo"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "FailoverScheme apps/foo: primary apps/foo in cluster east, 2 failover group(s)"
        ),
        "{text}"
    );
    assert!(text.contains("route to apps/foo (Healthy) in cluster east (Envoy cluster detour|east|apps|foo), the primary"), "{text}");
    assert!(text.contains("because the primary is Healthy"), "{text}");
    assert!(
        east.hosts().contains(&"foo.apps".to_string()),
        "probed through east's gateway"
    );

    // East's service dies behind its gateway, which says so.
    east.fail_service(true);
    let out = explain(&dir, &["--service", "apps/foo"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("route to apps/foo (Healthy) in cluster west (Envoy cluster detour|west|apps|foo), failover group 1"),
        "{text}"
    );
    assert!(
        text.contains("no earlier group has a Healthy target; group 1 is the first that does"),
        "{text}"
    );
    let east_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("east"))
        .unwrap();
    assert!(
        east_line.contains("Unhealthy") && east_line.contains("HTTP 503"),
        "{text}"
    );
    assert!(text.contains("→ group 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_the_table_of_a_running_controller() {
    let gateways = three_gateways().await;
    let dir = config(&gateways);
    let [east, _west, _south] = gateways;
    east.fail_service(true);
    let c = Controller::start(dir.path()).await;
    c.wait_east_health(["Unhealthy", "Healthy", "Healthy"])
        .await;
    let version = c.get("/v1/tables/east", None).await.etag.unwrap();
    let url = format!("http://{}", c.addr);
    let out = explain(&dir, &["--service", "apps/foo", "--controller", &url]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "health: from the controller at {url} (table version {version})"
        )),
        "{text}"
    );
    assert!(
        text.contains("in cluster west (Envoy cluster detour|west|apps|foo), failover group 1"),
        "{text}"
    );

    drop(c);
    let out = explain(&dir, &["--service", "apps/foo", "--controller", &url]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "cannot fetch the table from the controller at {url}/v1/tables/east"
        )),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn says_clearly_when_there_is_nothing_to_explain() {
    let g = three_gateways().await;
    let dir = config(&g);
    let out = explain(&dir, &["--service", "apps/bar"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no FailoverScheme has apps/bar in cluster east as its primary, so detour leaves its requests alone (schemes with a primary in east: apps/foo)"),
        "{}",
        stderr(&out)
    );
    let out = tokio::task::spawn_blocking({
        let d = dir.str().to_string();
        move || {
            detour(&[
                "explain",
                "--config",
                &d,
                "--cluster",
                "north",
                "--service",
                "apps/foo",
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown cluster \"north\""),
        "{}",
        stderr(&out)
    );
    let out = explain(&dir, &["--service", "foo"]).await;
    assert_eq!(out.status.code(), Some(2), "a usage error");
}
