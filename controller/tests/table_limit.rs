//! The filters' `maxTableBytes`, kept by `detour serve --max-table-bytes`: past 80% of
//! it the metrics, the status API and the log warn; a larger table is never served (the
//! cluster's last good one stays, and an event says why).
// Test code: a failed unwrap is a failed test; `foo` is the example service's name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_names
)]

mod common;
use common::*;
use std::time::Duration;

/// The example clusters with `n` more services in east and west, and one scheme per
/// service (primary in east, failover to west): east's table grows with `n`.
fn documents(n: usize) -> (String, String) {
    let (mut clusters, _) = example_files();
    let mut schemes = String::new();
    for (cluster, ip) in [("east", "127.0.1.10"), ("west", "127.0.2.10")] {
        let foo =
            format!("  - {{name: foo, namespace: apps, port: 8080, endpoints: [\"{ip}:8080\"]}}\n");
        assert!(clusters.contains(&foo), "{cluster}");
        let more: String = (0..n)
            .map(|i| format!("  - {{name: svc-{i}, namespace: apps, port: 8080, endpoints: [\"{ip}:8080\"]}}\n"))
            .collect();
        clusters = clusters.replace(&foo, &format!("{foo}{more}"));
    }
    for i in 0..n {
        schemes.push_str(&format!(
            "---\napiVersion: detour.dev/v1alpha1\nkind: FailoverScheme\nmetadata: {{name: svc-{i}, namespace: apps}}\nspec:\n  primary: {{cluster: east, name: svc-{i}, namespace: apps}}\n  failoverGroups:\n  - priorityGroup:\n    - {{cluster: west, services: [{{name: svc-{i}, namespace: apps}}]}}\n"
        ));
    }
    (clusters, schemes)
}

/// The status document once `found` finds what it wants in it (10s at most).
async fn status_until(
    c: &Controller,
    what: &str,
    found: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = c.get("/v1/status", None).await.json();
        if found(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {what} in {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Bytes of east's table as a controller serves it for `n` more schemes.
async fn east_table_bytes(n: usize) -> usize {
    let (clusters, schemes) = documents(n);
    let config = ConfigDir::new(&[("clusters.yaml", &clusters), ("schemes.yaml", &schemes)]);
    let c = Controller::start(config.path()).await;
    c.wait_ready().await;
    c.get("/v1/tables/east", None).await.body.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_past_80_percent_is_warned_about_and_one_over_the_limit_is_never_served() {
    let small = east_table_bytes(2).await;
    let big = east_table_bytes(12).await;
    // A limit 12 more schemes pass, 11 do not reach, and 2 are far below.
    let max = big - 100;
    assert!(
        small * 5 < max * 4 && east_table_bytes(11).await * 5 > max * 4,
        "{small} {big}"
    );

    let (clusters, schemes) = documents(2);
    let config = ConfigDir::new(&[("clusters.yaml", &clusters), ("schemes.yaml", &schemes)]);
    let max_arg = max.to_string();
    let c = Controller::start_with(config.path(), &["--max-table-bytes", &max_arg]).await;
    c.wait_ready().await;
    let good = c.get("/v1/tables/east", None).await;
    assert_eq!(good.status, 200);
    assert!(
        c.metrics()
            .await
            .contains(&format!("detour_table_max_bytes {max}"))
    );
    let status = c.get("/v1/status", None).await.json();
    assert_eq!(status["clusters"][0]["name"], "east");
    assert!(
        status["clusters"][0].get("tableWarning").is_none(),
        "{status}"
    );

    // Eleven schemes: served, and warned about everywhere.
    let (clusters, schemes) = documents(11);
    config.write("clusters.yaml", &clusters);
    config.write("schemes.yaml", &schemes);
    let status = status_until(&c, "warning", |s| {
        s["clusters"][0].get("tableWarning").is_some()
    })
    .await;
    let east = &status["clusters"][0];
    assert!(
        east["tableWarning"]
            .as_str()
            .unwrap()
            .contains("of the filters' maxTableBytes"),
        "{east}"
    );
    assert!(
        status["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "TableNearLimit")
    );
    let near = c.get("/v1/tables/east", None).await;
    assert_ne!(near.etag, good.etag, "a table under the limit is served");
    assert!(c.raw_logs().contains("% of the filters' maxTableBytes"));

    // Twelve: over the limit. The last good table stays, and the refusal is reported.
    let (clusters, schemes) = documents(12);
    config.write("clusters.yaml", &clusters);
    config.write("schemes.yaml", &schemes);
    let status = status_until(&c, "TableRefused event", |s| {
        s["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "TableRefused" && e["cluster"] == "east")
    })
    .await;
    assert!(
        status["clusters"][0]["tableWarning"]
            .as_str()
            .unwrap()
            .contains("it is not served and the last good table stays"),
        "{status}"
    );
    let served = c.get("/v1/tables/east", None).await;
    assert_eq!(served.status, 200);
    // The last good table stays: the eleven schemes' (its targets' health may have
    // moved on since `near` was read, so its version may be a later one).
    let schemes_of = |body: &str| {
        let doc: serde_json::Value = serde_json::from_str(body).unwrap();
        doc["schemes"].as_array().unwrap().len()
    };
    assert_eq!(
        schemes_of(&served.body),
        schemes_of(&near.body),
        "the last good table stays"
    );
    assert!(served.body.len() <= max);
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("detour_tables_refused_total{cluster=\"east\"}"),
        "{metrics}"
    );
    // The other clusters' tables are not held back.
    assert_eq!(c.get("/v1/tables/west", None).await.status, 200);
}
