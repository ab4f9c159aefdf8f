//! `detour serve` with mTLS, over real handshakes: the table API admits only certificates
//! from the federation CA and gives each cluster its own table alone; the health probes
//! present the controller's probe certificate to (stand-in) mTLS gateways; bad
//! certificate files stop the start and are named; nothing secret reaches the logs.
// Test code: a failed unwrap is a failed test; `foo` is the example service's name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_names
)]

mod common;
use common::tls::{Certs, TlsGateway};
use common::*;
use detour_core::pki::identity::{ClusterRole, ControllerRole, Identity};
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;

/// Three mTLS stand-in gateways, the example topology pointing at them, its
/// certificates, and a controller serving with `--certs`.
struct Setup {
    gateways: Vec<TlsGateway>,
    config: ConfigDir,
    certs: Certs,
    controller: Controller,
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

/// [`setup`], with `tamper` run on the certificates before the controller starts.
async fn setup_with(tamper: impl FnOnce(&Certs)) -> Setup {
    let listeners = [
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    ];
    let addrs = listeners.each_ref().map(|l| l.local_addr().unwrap());
    let (clusters, foo) = topology(addrs, 20, "0s");
    let config = ConfigDir::new(&[("clusters.yaml", &clusters), ("foo.yaml", &foo)]);
    let certs = Certs::init(config.path());
    tamper(&certs);
    let mut gateways = Vec::new();
    for (listener, (name, cluster)) in
        listeners
            .into_iter()
            .zip([("east", "east"), ("west", "west"), ("south", "south")])
    {
        let files = certs.files(&Identity::cluster(cluster, ClusterRole::Gateway));
        gateways.push(TlsGateway::start(listener, &files, name).await);
    }
    let controller = Controller::start_with(
        config.path(),
        &["--certs", certs.str(), "--ops-listen", "127.0.0.1:0"],
    )
    .await;
    // Tables are served from the end of the first round of checks.
    controller.wait_ready().await;
    Setup {
        gateways,
        config,
        certs,
        controller,
    }
}

async fn get(
    client: &detour::client::HttpClient,
    c: &Controller,
    path: &str,
) -> Result<(u16, String), String> {
    let url = format!("https://127.0.0.1:{}{path}", c.addr.port());
    client
        .get_body(&url, &[], Duration::from_secs(5), 1 << 22)
        .await
        .map(|(r, body)| {
            (
                r.status().as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            )
        })
        .map_err(|e| e.to_string())
}

fn table(cluster: &str) -> Identity {
    Identity::cluster(cluster, ClusterRole::Table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_api_admits_only_the_federation_and_each_cluster_to_its_own_table() {
    let Setup {
        gateways,
        config: _config,
        certs,
        controller: c,
    } = setup().await;
    let scratch = tempfile::tempdir().unwrap();

    // West's table certificate reads west's table...
    let west = certs.client(&table("west"));
    let (status, body) = get(&west, &c, "/v1/tables/west").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["cluster"], "west");

    // ...and nobody else's, existing or not: 403 with a JSON reason.
    for other in ["east", "north"] {
        let (status, body) = get(&west, &c, &format!("/v1/tables/{other}"))
            .await
            .unwrap();
        assert_eq!(status, 403, "{body}");
        let err: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            err["error"].as_str().unwrap(),
            format!(
                "the client certificate is spiffe://detour.dev/cluster/west/table; only \
                 spiffe://detour.dev/cluster/{other}/table may read the table of cluster \"{other}\""
            )
        );
    }
    // A cluster's Envoy certificate is for gateways, not tables.
    let envoy = certs.client(&Identity::cluster("east", ClusterRole::Envoy));
    assert_eq!(get(&envoy, &c, "/v1/tables/east").await.unwrap().0, 403);

    // No certificate, or one from another CA (even naming east's table), or an expired
    // one: no handshake, so no answer at all.
    let refused = [
        ("no certificate", certs.client_without_certificate()),
        (
            "another CA",
            certs.foreign_client(&table("east"), scratch.path()),
        ),
        (
            "expired",
            certs.expired_client(&table("east"), scratch.path()),
        ),
    ];
    for (what, client) in &refused {
        let r = get(client, &c, "/v1/tables/east").await;
        assert!(r.is_err(), "{what}: {r:?}");
    }
    // Plain HTTP to the TLS port gets nowhere either.
    let plain = detour::client::HttpClient::fresh_connections();
    let url = format!("http://{}/v1/tables/east", c.addr);
    assert!(
        plain
            .get_body(&url, &[], Duration::from_secs(5), 1 << 16)
            .await
            .map(|(r, _)| r.status().as_u16() != 200)
            .unwrap_or(true)
    );
    c.wait_log("refused handshakes logged", |l| {
        l["message"] == "TLS handshake refused"
    })
    .await;

    // The operational endpoints are plain HTTP on their own listener, without the table
    // API; the table API has no operational endpoints.
    let ops = |path: &str| {
        let url = format!("http://{}{path}", c.ops);
        let plain = plain.clone();
        async move {
            let (r, body) = plain
                .get_body(&url, &[], Duration::from_secs(5), 1 << 22)
                .await
                .unwrap();
            (
                r.status().as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            )
        }
    };
    assert_eq!(ops("/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(ops("/v1/tables/east").await.0, 404);
    assert_eq!(get(&west, &c, "/healthz").await.unwrap().0, 404);
    let metrics = ops("/metrics").await.1;
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("detour_tls_handshake_failures_total "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(failures >= 3, "{metrics}");
    assert!(
        metrics.contains("detour_table_requests_total{code=\"403\"} 3"),
        "{metrics}"
    );

    // Health probes went through the mTLS gateways presenting the certificate east's
    // Envoy presents there (apps/foo's primary is in east): the tables carry real health,
    // as east's Envoy would find it.
    let probe = Identity::cluster("east", ClusterRole::Envoy);
    for g in &gateways {
        eventually("probed", Duration::from_secs(10), || {
            !g.clients.lock().unwrap().is_empty()
        })
        .await;
        assert!(
            g.clients
                .lock()
                .unwrap()
                .iter()
                .all(|id| id.as_ref() == Some(&probe))
        );
    }
    let east = certs.client(&table("east"));
    let health = || async {
        let (_, body) = get(&east, &c, "/v1/tables/east").await.unwrap();
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        doc["schemes"][0]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g.as_array().unwrap().clone())
            .map(|t| t["health"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while health().await != ["Healthy", "Healthy", "Healthy"] {
        assert!(std::time::Instant::now() < deadline, "{:?}", health().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateways[0]
        .status
        .store(503, std::sync::atomic::Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while health().await != ["Unhealthy", "Healthy", "Healthy"] {
        assert!(std::time::Instant::now() < deadline, "{:?}", health().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Nothing secret in the logs: no PEM block, no line of any key or certificate.
    let logs = c.raw_logs();
    assert!(!logs.contains("-----BEGIN"), "{logs}");
    // (The SDS files hold the same PEM as the .crt and .key files, in JSON lines
    // that log lines share, such as `{`.)
    for f in common::tls::files_under(certs.path())
        .into_iter()
        .filter(|f| f.extension().is_none_or(|e| e != "json"))
    {
        let text = std::fs::read_to_string(certs.path().join(&f)).unwrap();
        for line in text.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!logs.contains(line), "{} appears in the logs", f.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_asks_a_tls_controller_with_the_clusters_certificate() {
    let s = setup().await;
    let (config, certs, addr) = (
        s.config.str().to_string(),
        s.certs.str().to_string(),
        s.controller.addr.to_string(),
    );
    let out = tokio::task::spawn_blocking(move || {
        detour(&[
            "explain",
            "--config",
            &config,
            "--cluster",
            "east",
            "--service",
            "apps/foo",
            "--controller",
            &addr,
            "--certs",
            &certs,
        ])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "health: from the controller at {}",
            s.controller.addr
        )),
        "{}",
        stdout(&out)
    );
    // Without certificates the same controller cannot be asked.
    let (config, addr) = (s.config.str().to_string(), s.controller.addr.to_string());
    let out = tokio::task::spawn_blocking(move || {
        detour(&[
            "explain",
            "--config",
            &config,
            "--cluster",
            "east",
            "--service",
            "apps/foo",
            "--controller",
            &addr,
        ])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot fetch the table"),
        "{}",
        stderr(&out)
    );
}

/// Starts `detour serve --certs DIR` and expects it to exit at once with `want` in its
/// message.
async fn refuses_to_start(config: &Path, args: &[&str], want: &str) {
    let Err(logs) = Controller::try_start_with(config, args).await else {
        panic!("the controller started with {args:?}");
    };
    assert!(logs.contains(want), "wanted {want:?} in:\n{logs}");
    assert!(!logs.contains("-----BEGIN"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificate_files_stop_the_start_and_are_named() {
    let (clusters, foo) = example_files();
    let config = ConfigDir::new(&[("clusters.yaml", &clusters), ("foo.yaml", &foo)]);
    let certs = Certs::init(config.path());
    let layout = certs.layout();
    let server = layout.controller(ControllerRole::Server);
    let probe = layout.controller(ControllerRole::Probe);
    let ops = ["--ops-listen", "127.0.0.1:0"];
    let with_certs = [&["--certs", certs.str()][..], &ops[..]].concat();

    // TLS needs a plain listener for the operational endpoints.
    refuses_to_start(config.path(), &["--certs", certs.str()], "add --ops-listen").await;

    // A key that belongs to another certificate.
    let original = std::fs::read(&server.key).unwrap();
    std::fs::copy(&probe.key, &server.key).unwrap();
    let want = format!(
        "{}: this private key does not belong to the certificate in {}",
        server.key.display(),
        server.cert.display()
    );
    refuses_to_start(config.path(), &with_certs, &want).await;
    // The same through the explicit flags.
    let ca = layout.ca().cert;
    let explicit = [
        "--tls-cert",
        server.cert.to_str().unwrap(),
        "--tls-key",
        server.key.to_str().unwrap(),
        "--client-ca",
        ca.to_str().unwrap(),
        "--ops-listen",
        "127.0.0.1:0",
    ];
    refuses_to_start(config.path(), &explicit, &want).await;
    std::fs::write(&server.key, original).unwrap();

    // A missing probe certificate.
    std::fs::rename(&probe.cert, certs.path().join("aside")).unwrap();
    let want = format!("{}: cannot read", probe.cert.display());
    refuses_to_start(config.path(), &with_certs, &want).await;
    std::fs::rename(certs.path().join("aside"), &probe.cert).unwrap();

    // A trust bundle that is not PEM (with --certs, every CA to trust is in
    // trust.crt), and a key file that is not PEM.
    let trust = layout.trust();
    let original = std::fs::read(&trust).unwrap();
    std::fs::write(&trust, "hello\n").unwrap();
    let want = format!("{}: no certificate in it", trust.display());
    refuses_to_start(config.path(), &with_certs, &want).await;
    std::fs::write(&trust, original).unwrap();
    std::fs::write(&server.key, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n").unwrap();
    let want = format!("{}: not a PEM file", server.key.display());
    refuses_to_start(config.path(), &with_certs, &want).await;

    // render envoy names its files the same way.
    std::fs::copy(
        layout.cluster("west", ClusterRole::Envoy).key,
        layout.cluster("east", ClusterRole::Gateway).key,
    )
    .unwrap();
    let out = detour(&[
        "render",
        "envoy",
        "--config",
        config.str(),
        "--cluster",
        "east",
        "--ingress",
        "127.0.0.1:10000",
        "--admin",
        "127.0.0.1:9901",
        "--controller",
        "127.0.0.1:8080",
        "--certs",
        certs.str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let gw = layout.cluster("east", ClusterRole::Gateway);
    assert!(
        stderr(&out).contains(&format!(
            "{}: this private key does not belong to the certificate in {}",
            gw.key.display(),
            gw.cert.display()
        )),
        "{}",
        stderr(&out)
    );
}

/// Issue 17: the probes present east's Envoy certificate for east's scheme, so when that
/// certificate has expired (a renewal that never reached it) the checks fail as east's
/// Envoy would, and east's table stops calling the failover targets Healthy; with the
/// controller's own probe certificate they would still pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_envoy_certificate_fails_the_checks_made_for_it() {
    let Setup {
        gateways,
        config: _config,
        certs,
        controller: c,
    } = setup_with(|certs| {
        let layout = certs.layout();
        let ca = layout.ca();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let ca = detour_core::pki::issue::CertAuthority::from_pem(&read(&ca.cert), &read(&ca.key))
            .unwrap();
        let day = Duration::from_secs(86_400);
        let now = std::time::SystemTime::now();
        let spec = detour_core::pki::issue::LeafSpec::new(
            Identity::cluster("east", ClusterRole::Envoy),
            vec![],
        );
        let expired = ca.issue_between(&spec, now - 30 * day, now - day).unwrap();
        let files = layout.cluster("east", ClusterRole::Envoy);
        std::fs::write(&files.cert, expired.cert_pem).unwrap();
        std::fs::write(&files.key, expired.key_pem).unwrap();
    })
    .await;
    let east = certs.client(&table("east"));
    let (_, body) = get(&east, &c, "/v1/tables/east").await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let health: Vec<&str> = doc["schemes"][0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g.as_array().unwrap())
        .map(|t| t["health"].as_str().unwrap())
        .collect();
    // West and south are out of reach for east's Envoy: not Healthy in east's table.
    // East's own foo stays as it was (east's Envoy reaches it directly, not through a
    // gateway, and a check that only a gateway refused never moves a primary's traffic).
    assert_eq!(
        health,
        ["Healthy", "Unknown", "Unknown"],
        "east's Envoy cannot cross with its certificate"
    );
    // No gateway let a check through; each check failed on the handshake.
    assert!(
        gateways
            .iter()
            .all(|g| g.clients.lock().unwrap().is_empty())
    );
    let metrics = c.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("detour_health_checks_total{") && l.contains("result=\"error\"")),
        "{metrics}"
    );
}
