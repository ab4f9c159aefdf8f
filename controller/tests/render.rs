//! `detour render envoy` checked by the real Envoy: every rendered config must pass
//! `envoy --mode validate`, and one is run to show its listeners route as internals.md
//! says. Skipped, loudly, only when the pinned Envoy is not installed.
// Test code: a failed unwrap is a failed test; `foo` is the example service's name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_names
)]

mod common;
use common::envoy::*;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn render(
    config: &str,
    cluster: &str,
    ingress: &str,
    admin: &str,
    wasm: &Path,
) -> std::process::Output {
    detour(&[
        "render",
        "envoy",
        "--config",
        config,
        "--cluster",
        cluster,
        "--ingress",
        ingress,
        "--admin",
        admin,
        "--controller",
        "127.0.0.1:8080",
        "--wasm",
        wasm.to_str().unwrap(),
    ])
}

#[test]
fn every_rendered_config_passes_envoy_validation() {
    let Some(envoy) = envoy() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut filters = vec![stub_filter(tmp.path())];
    filters.extend(real_filter());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config");
    for wasm in &filters {
        for cluster in ["east", "west", "south"] {
            let out = render(
                example.to_str().unwrap(),
                cluster,
                "127.0.0.1:10000",
                "127.0.0.1:9901",
                wasm,
            );
            assert!(out.status.success(), "{}", stderr(&out));
            let file = tmp.path().join(format!("{cluster}.yaml"));
            std::fs::write(&file, &out.stdout).unwrap();
            let v = Command::new(&envoy)
                .args(["--mode", "validate", "--use-dynamic-base-id"])
                .args(["-l", "warning", "-c"])
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                v.status.success() && String::from_utf8_lossy(&v.stdout).contains("OK"),
                "Envoy refused the config for {cluster} with {}:\n{}\n{}",
                wasm.display(),
                String::from_utf8_lossy(&v.stdout),
                String::from_utf8_lossy(&v.stderr)
            );
        }
    }
}

#[test]
fn render_refuses_what_it_cannot_do() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config");
    let example = example.to_str().unwrap();
    let base = [
        "render",
        "envoy",
        "--config",
        example,
        "--ingress",
        "127.0.0.1:10000",
        "--admin",
        "127.0.0.1:9901",
        "--controller",
        "127.0.0.1:8080",
    ];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        detour(&args)
    };
    let out = with(&["--cluster", "east", "--certs", "/nonexistent/certs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/certs/ca.crt: cannot read"),
        "{}",
        stderr(&out)
    );
    let out = with(&["--cluster", "north"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown cluster \"north\""),
        "{}",
        stderr(&out)
    );
    let out = with(&["--cluster", "east", "--ingress", "nowhere"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rendered_envoy_routes_as_internals_says() {
    let Some(envoy) = envoy() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let wasm = stub_filter(tmp.path());
    // East's foo instance, and stand-ins for west's and south's gateways.
    let mut foo_east = FakeGateway::named("east").await;
    let west = FakeGateway::named("west").await;
    let south = FakeGateway::named("south").await;
    let (ingress, admin, gateway) = (free_port(), free_port(), free_port());

    let (clusters, foo) = topology(
        ["127.0.0.1:1".parse().unwrap(), west.addr, south.addr],
        20,
        "0s",
    );
    let clusters = clusters
        .replace(
            "{address: 127.0.0.1, port: 1}",
            &format!("{{address: 127.0.0.1, port: {gateway}}}"),
        )
        .replace("\"127.0.1.10:8080\"", &format!("\"{}\"", foo_east.addr));
    let config = ConfigDir::new(&[("clusters.yaml", &clusters), ("foo.yaml", &foo)]);
    let out = render(
        config.str(),
        "east",
        &format!("127.0.0.1:{ingress}"),
        &format!("127.0.0.1:{admin}"),
        &wasm,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let file = tmp.path().join("east.yaml");
    std::fs::write(&file, &out.stdout).unwrap();
    let log = std::fs::File::create(tmp.path().join("envoy.log")).unwrap();
    let _envoy = Envoy(
        Command::new(&envoy)
            .args([
                "--use-dynamic-base-id",
                "--concurrency",
                "2",
                "-l",
                "warning",
                "-c",
            ])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    let client = detour::client::HttpClient::fresh_connections();
    let get = |port: u16, headers: Vec<(&'static str, String)>| {
        let client = client.clone();
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let url = format!("http://127.0.0.1:{port}/hello");
            client
                .get_body(&url, &h, Duration::from_secs(5), 1 << 16)
                .await
        }
    };
    let mut ready = false;
    for _ in 0..500 {
        if let Ok((r, _)) = get(admin, vec![("host", "admin".into())]).await {
            // Any answer from admin means Envoy is up; /ready says its listeners are.
            let _ = r;
            let url = format!("http://127.0.0.1:{admin}/ready");
            if let Ok((r, _)) = client
                .get_body(&url, &[], Duration::from_secs(1), 1024)
                .await
                && r.status() == 200
            {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let envoy_log = || std::fs::read_to_string(tmp.path().join("envoy.log")).unwrap_or_default();
    assert!(ready, "Envoy did not become ready:\n{}", envoy_log());
    let foo_host = || ("host", "foo.apps".to_string());

    // Ingress, no route header: the local service.
    let (r, body) = get(ingress, vec![foo_host()]).await.unwrap();
    assert_eq!(
        (r.status().as_u16(), &body[..]),
        (200, &b"east"[..]),
        "{}",
        envoy_log()
    );
    // Ingress, a client sending the route header itself: Envoy removes it before
    // choosing the route (the filter alone may choose), so the local service answers
    // and never sees it.
    let west_seen = west.hosts().len();
    let (r, body) = get(
        ingress,
        vec![
            foo_host(),
            ("x-detour-route", "detour|west|apps|foo".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!((r.status().as_u16(), &body[..]), (200, &b"east"[..]));
    assert_eq!(
        foo_east
            .header_values("x-detour-route")
            .last()
            .map(String::as_str),
        Some("")
    );
    assert_eq!(west.hosts().len(), west_seen);
    // Ingress, the filter setting the route header to a start group (the stub does on
    // `x-stub-route`): group 1 starts at west's gateway, and the header does not
    // travel further. Port in the authority still matches.
    let (r, body) = get(
        ingress,
        vec![
            ("host", "foo.apps:8080".into()),
            ("x-stub-route", "1".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!((r.status().as_u16(), &body[..]), (200, &b"west"[..]));
    assert_eq!(
        west.hosts().last().map(String::as_str),
        Some("foo.apps:8080")
    );
    assert_eq!(
        west.header_values("x-detour-route")
            .last()
            .map(String::as_str),
        Some("")
    );

    // Gateway: to the local service, marked as having crossed from east; no flags when
    // the service answered.
    let (r, body) = get(gateway, vec![foo_host(), ("x-detour-via", "forged".into())])
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), &body[..]), (200, &b"east"[..]));
    assert!(r.headers().get("x-detour-gateway-flags").is_none());
    assert_eq!(
        foo_east
            .header_values("x-detour-via")
            .last()
            .map(String::as_str),
        Some("east")
    );
    // Anything else: 404.
    let (r, _) = get(gateway, vec![("host", "bar.apps".into())])
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // The controller's probe goes through this gateway: east is Healthy...
    let explain = |config: String| {
        tokio::task::spawn_blocking(move || {
            detour(&[
                "explain",
                "--config",
                &config,
                "--cluster",
                "east",
                "--service",
                "apps/foo",
            ])
        })
    };
    let out = explain(config.str().to_string()).await.unwrap();
    assert!(
        stdout(&out).contains("because the primary is Healthy"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // ...until the service stops: the gateway says it could not reach it (UF, after
    // retrying its instances: URX), and the probe through it fails, so explain fails
    // over to west.
    foo_east.stop().await;
    let (r, _) = get(gateway, vec![foo_host()]).await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let flags = r
        .headers()
        .get("x-detour-gateway-flags")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // UC instead when the request met a kept-alive connection the stop was closing
    // under it: the gateway still answers for itself.
    assert!(
        flags.split(',').any(|f| f == "UF" || f == "UC"),
        "flags {flags:?}"
    );
    let out = explain(config.str().to_string()).await.unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("in cluster west (Envoy cluster detour|west|apps|foo), failover group 1"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("east") && l.contains("HTTP 503")),
        "{text}"
    );
}
