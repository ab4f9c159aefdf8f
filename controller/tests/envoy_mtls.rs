//! Configs rendered with `--certs`, run by the real Envoy: every one validates; the
//! east-west gateway admits only the federation's Envoys and the controller's probe;
//! and failover traffic between two simulated clusters crosses a real mTLS connection.
// Test code: a failed unwrap is a failed test; `foo` is the example service's name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_names
)]

mod common;
use common::envoy::*;
use common::tls::Certs;
use common::*;
use detour::client::HttpClient;
use detour_core::pki::identity::{ClusterRole, ControllerRole, Identity};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn render(
    config: &str,
    cluster: &str,
    ports: &Ports,
    controller: &str,
    wasm: &Path,
    certs: &str,
) -> String {
    let out = detour(&[
        "render",
        "envoy",
        "--config",
        config,
        "--cluster",
        cluster,
        "--ingress",
        &format!("127.0.0.1:{}", ports.ingress),
        "--admin",
        &format!("127.0.0.1:{}", ports.admin),
        "--controller",
        controller,
        "--wasm",
        wasm.to_str().unwrap(),
        "--certs",
        certs,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

#[derive(Clone, Copy)]
struct Ports {
    ingress: u16,
    admin: u16,
    gateway: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            ingress: free_port(),
            admin: free_port(),
            gateway: free_port(),
        }
    }
}

#[test]
fn every_config_rendered_with_certs_passes_envoy_validation() {
    let Some(envoy) = envoy() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config");
    let certs = Certs::init(&example);
    let mut filters = vec![stub_filter(tmp.path())];
    filters.extend(real_filter());
    let ports = Ports::new();
    for wasm in &filters {
        for cluster in ["east", "west", "south"] {
            let yaml = render(
                example.to_str().unwrap(),
                cluster,
                &ports,
                "127.0.0.1:8443",
                wasm,
                certs.str(),
            );
            assert!(yaml.contains("# Between clusters and to the controller: mTLS"));
            let file = tmp.path().join(format!("{cluster}.yaml"));
            std::fs::write(&file, yaml).unwrap();
            if let Err(e) = validate(&envoy, &file) {
                panic!("Envoy refused {cluster} with {}:\n{e}", wasm.display());
            }
        }
    }
}

/// The example topology on loopback ports: east's and west's gateways at `east` and
/// `west`, south's nowhere; foo's endpoints in east and west at the given addresses.
fn two_clusters(east: &Ports, west: &Ports, foo_east: &str, foo_west: &str) -> ConfigDir {
    let gw = |p: u16| format!("127.0.0.1:{p}").parse().unwrap();
    let (clusters, foo) = topology([gw(east.gateway), gw(west.gateway), gw(1)], 50, "0s");
    let clusters = clusters
        .replace("\"127.0.1.10:8080\"", &format!("\"{foo_east}\""))
        .replace("\"127.0.2.10:8080\"", &format!("\"{foo_west}\""));
    ConfigDir::new(&[("clusters.yaml", &clusters), ("foo.yaml", &foo)])
}

async fn get(client: &HttpClient, url: &str, host: &str) -> Result<(u16, String), String> {
    client
        .get_body(url, &[("host", host)], Duration::from_secs(5), 1 << 16)
        .await
        .map(|(r, b)| {
            (
                r.status().as_u16(),
                String::from_utf8_lossy(&b).into_owned(),
            )
        })
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_admits_only_the_federations_envoys_and_probe() {
    let Some(envoy) = envoy() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let foo_west = FakeGateway::named("west").await;
    let (east, west) = (Ports::new(), Ports::new());
    let config = two_clusters(&east, &west, "127.0.0.1:1", &foo_west.addr.to_string());
    let certs = Certs::init(config.path());
    let yaml = render(
        config.str(),
        "west",
        &west,
        "127.0.0.1:1",
        &stub_filter(tmp.path()),
        certs.str(),
    );
    let file = tmp.path().join("west.yaml");
    std::fs::write(&file, yaml).unwrap();
    let _envoy = Envoy::start(&envoy, &file, &tmp.path().join("west.log"), west.admin).await;
    let url = format!("https://127.0.0.1:{}/hello", west.gateway);
    let listener = format!("listener.127.0.0.1_{}", west.gateway);

    // Refused: no certificate; another CA's (naming east's Envoy); the federation's but
    // expired; the federation's but not an identity that may cross (a table client).
    let refused: [(&str, HttpClient, &str); 4] = [
        (
            "no certificate",
            certs.client_without_certificate(),
            "ssl.fail_verify_no_cert",
        ),
        (
            "another CA",
            certs.foreign_client(&Identity::cluster("east", ClusterRole::Envoy), tmp.path()),
            "ssl.fail_verify_error",
        ),
        (
            "expired",
            certs.expired_client(&Identity::cluster("east", ClusterRole::Envoy), tmp.path()),
            "ssl.fail_verify_error",
        ),
        (
            "a table certificate",
            certs.client(&Identity::cluster("east", ClusterRole::Table)),
            "ssl.fail_verify_san",
        ),
    ];
    for (what, client, _) in &refused {
        let r = get(client, &url, "foo.apps").await;
        assert!(r.is_err(), "{what}: {r:?}");
    }
    assert_eq!(
        stat(west.admin, &format!("{listener}.ssl.fail_verify_no_cert")).await,
        1
    );
    assert_eq!(
        stat(west.admin, &format!("{listener}.ssl.fail_verify_error")).await,
        2
    );
    assert_eq!(
        stat(west.admin, &format!("{listener}.ssl.fail_verify_san")).await,
        1
    );
    assert!(
        foo_west.hosts().is_empty(),
        "a refused client reached the service"
    );

    // Admitted: east's Envoy, and the controller's probe.
    for id in [
        Identity::cluster("east", ClusterRole::Envoy),
        Identity::Controller(ControllerRole::Probe),
    ] {
        let r = get(&certs.client(&id), &url, "foo.apps").await;
        assert_eq!(r, Ok((200, "west".to_string())), "{id}");
    }
    assert_eq!(
        stat(west.admin, &format!("{listener}.ssl.handshake")).await,
        2
    );
    assert_eq!(foo_west.header_values("x-detour-via"), ["west", "west"]);
    let crossed = foo_west.hosts().len();
    // `explain` probes through the gateway as the controller does: with the probe
    // certificate it passes, without it the gateway refuses the connection.
    let explain = |certs: Option<String>| {
        let config = config.str().to_string();
        tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "explain".to_string(),
                "--config".into(),
                config,
                "--cluster".into(),
                "east".into(),
                "--service".into(),
                "apps/foo".into(),
            ];
            if let Some(dir) = certs {
                args.extend(["--certs".to_string(), dir]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            stdout(&detour(&args))
        })
    };
    let west_line = |text: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with("west"))
            .unwrap_or_default()
            .to_string()
    };
    let with = explain(Some(certs.str().to_string())).await.unwrap();
    assert!(west_line(&with).contains("Healthy    HTTP 200"), "{with}");
    let without = explain(None).await.unwrap();
    assert!(west_line(&without).contains("Unhealthy"), "{without}");
    assert_eq!(
        foo_west.hosts().len(),
        crossed + 1,
        "only the probe with a certificate got through"
    );
    // Plain HTTP gets nothing.
    let plain = HttpClient::fresh_connections();
    let plain_url = format!("http://127.0.0.1:{}/hello", west.gateway);
    assert!(get(&plain, &plain_url, "foo.apps").await.is_err());
}

/// Failover from east to west through west's gateway, over mTLS. With the real filter
/// (when built) the whole path runs: the filter fetches east's table from the mTLS
/// controller, east's foo dies, and its requests are answered by west's foo. Without
/// it, the stub filter lets the test route by the internal header instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_traffic_crosses_mtls_between_clusters() {
    let Some(envoy) = envoy() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let real = real_filter();
    let wasm: PathBuf = real.clone().unwrap_or_else(|| stub_filter(tmp.path()));
    let mut foo_east = FakeGateway::named("east").await;
    let foo_west = FakeGateway::named("west").await;
    let (east, west) = (Ports::new(), Ports::new());
    let config = two_clusters(
        &east,
        &west,
        &foo_east.addr.to_string(),
        &foo_west.addr.to_string(),
    );
    let certs = Certs::init(config.path());
    let controller = Controller::start_with(
        config.path(),
        &["--certs", certs.str(), "--ops-listen", "127.0.0.1:0"],
    )
    .await;
    let controller_addr = controller.addr.to_string();
    let mut envoys = Vec::new();
    for (name, ports) in [("east", &east), ("west", &west)] {
        let yaml = render(
            config.str(),
            name,
            ports,
            &controller_addr,
            &wasm,
            certs.str(),
        );
        let file = tmp.path().join(format!("{name}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let log = tmp.path().join(format!("{name}.log"));
        envoys.push(Envoy::start(&envoy, &file, &log, ports.admin).await);
    }
    let envoy_log = |name: &str| {
        std::fs::read_to_string(tmp.path().join(format!("{name}.log"))).unwrap_or_default()
    };
    // The controller's probes pass through both real gateways over mTLS.
    let probe_ok = |admin: u16, gateway: u16| async move {
        stat(
            admin,
            &format!("listener.127.0.0.1_{gateway}.ssl.handshake"),
        )
        .await
    };
    for p in [&east, &west] {
        wait_stat(
            p.admin,
            &format!("listener.127.0.0.1_{}.ssl.handshake", p.gateway),
            1,
        )
        .await;
    }

    let client = HttpClient::fresh_connections();
    let ingress = format!("http://127.0.0.1:{}/hello", east.ingress);
    assert_eq!(
        get(&client, &ingress, "foo.apps").await,
        Ok((200, "east".to_string())),
        "{}",
        envoy_log("east")
    );
    let remote = "cluster.detour|west|apps|foo.ssl.handshake";
    let crossings_before = stat(east.admin, remote).await;
    let west_before = probe_ok(west.admin, west.gateway).await;

    if real.is_some() {
        // The controller knows (through the gateways, over mTLS) that east and west are
        // up; south's gateway has never answered, so nothing is known of south...
        let table_client = certs.client(&Identity::cluster("east", ClusterRole::Table));
        let table_url = format!("https://{controller_addr}/v1/tables/east");
        let health = || async {
            let (_, body) = table_client
                .get_body(&table_url, &[], Duration::from_secs(5), 1 << 20)
                .await
                .unwrap();
            let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
            doc["schemes"][0]["groups"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|g| g.as_array().unwrap().clone())
                .map(|t| t["health"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while health().await != ["Healthy", "Healthy", "Unknown"] {
            assert!(std::time::Instant::now() < deadline, "{:?}", health().await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // ...and the filter fetched that table over mTLS with east's table certificate.
        wait_stat(east.admin, "cluster.detour_controller.ssl.handshake", 1).await;
        // A long-poll delivers each new table at once, and every worker adopts it on its
        // next 100ms tick: half a second covers both.
        tokio::time::sleep(Duration::from_millis(500)).await;
        foo_east.stop().await;
        let r = get(&client, &ingress, "foo.apps").await;
        assert_eq!(r, Ok((200, "west".to_string())), "{}", envoy_log("east"));
    } else {
        eprintln!("note: no built filter; the stub sets the internal route header instead");
        let r = client
            .get_body(
                &ingress,
                &[
                    ("host", "foo.apps"),
                    ("x-stub-route", "detour|west|apps|foo"),
                ],
                Duration::from_secs(5),
                1 << 16,
            )
            .await
            .unwrap();
        assert_eq!((r.0.status().as_u16(), &r.1[..]), (200, &b"west"[..]));
    }
    // The answer came from west's foo, through west's gateway, over a new mTLS
    // connection from east's Envoy (the probes account for the rest of the handshakes).
    assert_eq!(
        foo_west
            .header_values("x-detour-via")
            .last()
            .map(String::as_str),
        Some("west")
    );
    assert!(
        stat(east.admin, remote).await > crossings_before,
        "{}",
        envoy_log("east")
    );
    assert!(probe_ok(west.admin, west.gateway).await > west_before);
    assert_eq!(
        stat(
            east.admin,
            "cluster.detour|west|apps|foo.ssl.connection_error"
        )
        .await,
        0
    );
    assert!(!controller.raw_logs().contains("-----BEGIN"));
}
