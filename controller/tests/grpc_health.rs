//! gRPC health checks against a real gRPC server (grpcio's standard health service, from
//! the venv `make envoy` makes): straight to it, and through a real east-west gateway
//! rendered by `detour render envoy`, in plaintext (h2c) and over mTLS (h2 by ALPN).
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
use detour::client::Connections;
use detour::health::grpc::ServingStatus;
use detour::health::probe::{ProbeResult, Prober};
use detour::tls::client::{mtls_client, probe_files};
use detour_core::model::{
    Address, CheckKind, HealthCheck, Host, ProbeSpec, ServiceName, TargetRef,
};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A gRPC server with the standard health service: the server as a whole SERVING,
/// `foo.v1.Foo` NOT_SERVING, any other name unknown (NOT_FOUND). It prints its port.
const SERVER: &str = r#"
import sys
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
servicer = health.HealthServicer()
servicer.set("", health_pb2.HealthCheckResponse.SERVING)
servicer.set("foo.v1.Foo", health_pb2.HealthCheckResponse.NOT_SERVING)
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
server.wait_for_termination()
"#;

/// The venv's Python, when it has grpcio (`make envoy` installs it).
fn python() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let has_grpc = Command::new(&path)
        .args(["-c", "import grpc, grpc_health.v1.health"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_grpc {
        Some(path)
    } else {
        eprintln!(
            "\n!!!!!!!! SKIPPED: no grpcio in {} (run `make envoy`) !!!!!!!!\n",
            path.display()
        );
        None
    }
}

/// The server, killed on drop.
struct GrpcServer {
    child: Child,
    addr: SocketAddr,
}

impl GrpcServer {
    fn start(python: &Path) -> GrpcServer {
        let mut child = Command::new(python)
            .args(["-c", SERVER])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the gRPC server did not start: {line:?}")
        });
        GrpcServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A gRPC check of `service_name` on `apps/foo` of west, through `gateway`.
fn spec(gateway: SocketAddr, service_name: &str) -> ProbeSpec {
    ProbeSpec {
        caller: "east".into(),
        target: TargetRef {
            cluster: "west".into(),
            service: ServiceName::new("apps", "foo"),
        },
        gateways: vec![Address {
            host: Host::Ip(gateway.ip()),
            port: gateway.port(),
        }],
        check: HealthCheck {
            kind: CheckKind::Grpc {
                service_name: service_name.into(),
            },
            timeout: Duration::from_secs(2),
            interval: Duration::from_secs(2),
            ..HealthCheck::default()
        },
    }
}

fn assert_serving(r: &ProbeResult) {
    assert!(
        matches!(r, ProbeResult::Serving { .. }) && r.passed(),
        "{r:?}"
    );
    assert!(r.to_string().starts_with("gRPC SERVING in "), "{r}");
}

/// What each service name gets from the server, whichever way the checks go.
async fn assert_answers(prober: &Prober, gateway: SocketAddr) {
    for _ in 0..3 {
        assert_serving(&prober.probe(&spec(gateway, "")).await);
    }
    let r = prober.probe(&spec(gateway, "foo.v1.Foo")).await;
    assert_eq!(r, ProbeResult::NotServing(ServingStatus::NotServing));
    assert!(!r.passed());
    assert_eq!(r.label(), "failure");
    let r = prober.probe(&spec(gateway, "nope.v1.Nope")).await;
    assert!(
        matches!(&r, ProbeResult::GrpcStatus { code: 5, .. }),
        "unknown service: NOT_FOUND, got {r:?}"
    );
    assert!(
        r.to_string().starts_with("gRPC status 5 (NOT_FOUND)"),
        "{r}"
    );
}

#[tokio::test]
async fn checks_a_real_grpc_health_server() {
    let Some(python) = python() else { return };
    let mut server = GrpcServer::start(&python);
    let prober = Prober::new();
    assert_answers(&prober, server.addr).await;
    // A server that is gone fails the check.
    server.kill();
    let r = prober.probe(&spec(server.addr, "")).await;
    assert!(!r.passed(), "{r:?}");
}

/// A config where west's foo is the gRPC server, behind west's gateway on port
/// `gateway`; east's foo speaks gRPC too (nowhere).
fn west_config(server: SocketAddr, gateway: u16) -> ConfigDir {
    two_clusters(server, 1, gateway)
}

fn two_clusters(server: SocketAddr, east_gateway: u16, west_gateway: u16) -> ConfigDir {
    let gw = |p: u16| format!("127.0.0.1:{p}").parse().unwrap();
    let (clusters, foo) = topology([gw(east_gateway), gw(west_gateway), gw(2)], 500, "0s");
    let west = "port: 8080, endpoints: [\"127.0.2.10:8080\"]";
    let east = "port: 8080, endpoints: [\"127.0.1.10:8080\"]";
    assert!(clusters.contains(west) && clusters.contains(east));
    let clusters = clusters
        .replace(
            west,
            &format!("port: 8080, protocol: grpc, endpoints: [\"{server}\"]"),
        )
        .replace(
            east,
            "port: 8080, protocol: grpc, endpoints: [\"127.0.0.1:1\"]",
        );
    let foo = foo.replace("{path: /healthz,", "{grpc: {},");
    ConfigDir::new(&[("clusters.yaml", &clusters), ("foo.yaml", &foo)])
}

fn render_west(config: &ConfigDir, admin: u16, wasm: &Path, certs: Option<&str>) -> String {
    render(config, "west", free_port(), admin, wasm, certs)
}

fn render(
    config: &ConfigDir,
    cluster: &str,
    ingress: u16,
    admin: u16,
    wasm: &Path,
    certs: Option<&str>,
) -> String {
    let ingress = format!("127.0.0.1:{ingress}");
    let admin = format!("127.0.0.1:{admin}");
    let mut args = vec![
        "render",
        "envoy",
        "--config",
        config.str(),
        "--cluster",
        cluster,
        "--ingress",
        &ingress,
        "--admin",
        &admin,
        "--controller",
        "127.0.0.1:1",
        "--wasm",
        wasm.to_str().unwrap(),
    ];
    if let Some(dir) = certs {
        args.extend(["--certs", dir]);
    }
    let out = detour(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_checks_pass_through_a_real_gateway_in_plaintext_and_over_mtls() {
    let Some(envoy) = envoy() else { return };
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut server = GrpcServer::start(&python);
    let wasm = stub_filter(tmp.path());

    for mtls in [false, true] {
        let (gateway, admin) = (free_port(), free_port());
        let config = west_config(server.addr, gateway);
        let certs = mtls.then(|| Certs::init(config.path()));
        let yaml = render_west(&config, admin, &wasm, certs.as_ref().map(Certs::str));
        let file = tmp.path().join(format!("west-{mtls}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let log = tmp.path().join(format!("west-{mtls}.log"));
        let _envoy = Envoy::start(&envoy, &file, &log, admin).await;
        // As `detour serve` makes it: the probe's certificate, connections kept.
        let prober = match &certs {
            Some(c) => {
                Prober::tls(mtls_client(&probe_files(&c.layout()), Connections::Reused).unwrap())
            }
            None => Prober::new(),
        };
        let via = SocketAddr::from(([127, 0, 0, 1], gateway));
        assert_answers(&prober, via).await;
        // The gateway spoke HTTP/2 to the server (grpcio speaks nothing else), and the
        // checks came to it over HTTP/2 as well.
        let local = "cluster.detour|west|apps|foo";
        assert!(stat(admin, &format!("{local}.upstream_cx_http2_total")).await >= 1);
        let listener = "http.detour_gateway";
        assert!(
            stat(admin, &format!("{listener}.downstream_cx_http2_total")).await >= 1,
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert_eq!(
            stat(admin, &format!("{listener}.downstream_cx_http1_total")).await,
            0
        );
        // Every check shared one connection to the gateway.
        assert_eq!(
            stat(admin, &format!("{listener}.downstream_cx_total")).await,
            1
        );
        if mtls {
            let handshakes = format!("listener.127.0.0.1_{gateway}.ssl.handshake");
            assert!(stat(admin, &handshakes).await >= 1);
        }
    }

    // The service gone, the gateway answers for it, and the check fails.
    let (gateway, admin) = (free_port(), free_port());
    let config = west_config(server.addr, gateway);
    let yaml = render_west(&config, admin, &wasm, None);
    let file = tmp.path().join("west-dead.yaml");
    std::fs::write(&file, yaml).unwrap();
    let _envoy = Envoy::start(&envoy, &file, &tmp.path().join("west-dead.log"), admin).await;
    server.kill();
    let r = Prober::new()
        .probe(&spec(SocketAddr::from(([127, 0, 0, 1], gateway)), ""))
        .await;
    assert!(!r.passed(), "{r:?}");
    assert_eq!(r.label(), "failure", "an answer, from the gateway: {r:?}");
}

/// A gRPC call into east's Envoy, routed to west (the stub filter sets the route
/// header, as the real filter does on failover): east speaks HTTP/2 to west's gateway
/// over mTLS (agreed by ALPN), the gateway HTTP/2 to the server, and the answer and its
/// trailers come back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_crosses_clusters_over_mtls_in_http2() {
    let Some(envoy) = envoy() else { return };
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let server = GrpcServer::start(&python);
    let wasm = stub_filter(tmp.path());
    let (east_gw, west_gw) = (free_port(), free_port());
    let config = two_clusters(server.addr, east_gw, west_gw);
    let certs = Certs::init(config.path());
    let east_ingress = free_port();
    let mut envoys = Vec::new();
    let mut admins = Vec::new();
    for (cluster, ingress) in [("east", east_ingress), ("west", free_port())] {
        let admin = free_port();
        let yaml = render(&config, cluster, ingress, admin, &wasm, Some(certs.str()));
        let file = tmp.path().join(format!("{cluster}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        if let Err(e) = validate(&envoy, &file) {
            panic!("Envoy refused {cluster}:\n{e}");
        }
        let log = tmp.path().join(format!("{cluster}.log"));
        envoys.push(Envoy::start(&envoy, &file, &log, admin).await);
        admins.push(admin);
    }
    let client = detour::client::HttpClient::fresh_connections();
    let answer = client
        .post_http2(
            &format!("http://127.0.0.1:{east_ingress}"),
            "http://foo.apps/grpc.health.v1.Health/Check",
            &[
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("x-stub-route", "detour|west|apps|foo"),
            ],
            detour::health::grpc::encode_request("").into(),
            Duration::from_secs(5),
            1 << 16,
        )
        .await
        .unwrap();
    let log = || std::fs::read_to_string(tmp.path().join("east.log")).unwrap_or_default();
    assert_eq!(answer.status, 200, "{}", log());
    assert_eq!(
        answer.trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..]),
        "{answer:?}"
    );
    assert_eq!(
        detour::health::grpc::decode_response(&answer.body),
        Ok(ServingStatus::Serving)
    );
    let remote = "cluster.detour|west|apps|foo";
    assert_eq!(
        stat(admins[0], &format!("{remote}.upstream_cx_http2_total")).await,
        1
    );
    assert_eq!(
        stat(admins[0], &format!("{remote}.upstream_cx_http1_total")).await,
        0
    );
    assert!(stat(admins[0], &format!("{remote}.ssl.handshake")).await >= 1);
    assert!(
        stat(admins[1], "http.detour_gateway.downstream_cx_http2_total").await >= 1,
        "west's gateway took it in HTTP/2"
    );
}

/// `detour serve` checks a scheme with `healthCheck.grpc` through the real gateway: west
/// is Healthy while its gRPC server says SERVING, and Unhealthy once it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_checks_grpc_targets_through_their_gateway() {
    let Some(envoy) = envoy() else { return };
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut server = GrpcServer::start(&python);
    let (gateway, admin) = (free_port(), free_port());
    let config = west_config(server.addr, gateway);
    let yaml = render_west(&config, admin, &stub_filter(tmp.path()), None);
    let file = tmp.path().join("west.yaml");
    std::fs::write(&file, yaml).unwrap();
    let _envoy = Envoy::start(&envoy, &file, &tmp.path().join("west.log"), admin).await;
    let controller = Controller::start(config.path()).await;
    wait_for_west(&controller, "Healthy").await;
    assert!(stat(admin, "http.detour_gateway.downstream_cx_http2_total").await >= 1);
    server.kill();
    wait_for_west(&controller, "Unhealthy").await;
    // The gateway answered for the dead service, as gRPC (the status page follows the
    // table a moment later).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = controller.get("/v1/status", None).await.json();
        let last = status["schemes"][0]["groups"][1][0]["lastCheck"].clone();
        if last
            .as_str()
            .is_some_and(|l| l.starts_with("gRPC status 14 (UNAVAILABLE)"))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until west's health in east's table is `wanted` (east's and south's gateways
/// are nowhere).
async fn wait_for_west(controller: &Controller, wanted: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let table = controller.get("/v1/tables/east", None).await.json();
        // Group 0 is the primary (east), group 1 west.
        let now = table["schemes"][0]["groups"][1][0]["health"].clone();
        if now == wanted {
            return;
        }
        if std::time::Instant::now() > deadline {
            let status = controller.get("/v1/status", None).await.body;
            panic!("west is {now}, not {wanted}: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
