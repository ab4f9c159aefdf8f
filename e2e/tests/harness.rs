//! The harness tested on its own, without detour's controller or filter: the upstream
//! server, Envoy launching, the client and the load generator. If these fail, the
//! failover tests' verdicts mean nothing.

use detour_e2e::client::{HttpClient, Request};
use detour_e2e::envoy::{Envoy, EnvoySpec, plain_proxy_config};
use detour_e2e::load::{Load, LoadSpec};
use detour_e2e::out::OutDir;
use detour_e2e::ports::free_addr;
use detour_e2e::process::pid_alive;
use detour_e2e::upstream::{Upstream, UpstreamSpec};
use std::net::Ipv4Addr;
use std::time::Duration;

const EAST_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 10);
const EAST_GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 1);

fn east_foo(out: &OutDir) -> anyhow::Result<Upstream> {
    let spec = UpstreamSpec {
        cluster: "east".into(),
        service: "apps/foo".into(),
        listen: free_addr(EAST_SERVICE_IP)?,
    };
    Upstream::start(spec, out)
}

#[test]
fn upstream_names_its_cluster_and_its_records_survive_sigkill() {
    let out = OutDir::fresh("harness_upstream_records").unwrap();
    let mut foo = east_foo(&out).unwrap();
    let client = HttpClient::new(foo.addr(), "foo.apps");

    let get = client
        .send(Request::get("/a").header("x-test-id", "get-1"))
        .unwrap();
    assert_eq!(get.status, 200);
    assert_eq!(get.served_by(), Some("east"));
    let answer: detour_e2e::upstream::Answer = serde_json::from_slice(&get.body).unwrap();
    assert_eq!(
        (answer.cluster.as_str(), answer.service.as_str()),
        ("east", "apps/foo")
    );
    let post = client
        .send(Request::post("/b", "twelve bytes").header("x-test-id", "post-1"))
        .unwrap();
    assert_eq!(post.status, 200);
    client.get("/healthz").unwrap();

    let pid = foo.pid().unwrap();
    foo.kill().unwrap();
    assert!(!pid_alive(pid));
    assert!(
        client.get("/c").is_err(),
        "a killed upstream must not answer"
    );

    let records = foo.records().unwrap();
    let seen: Vec<(&str, &str, Option<&str>, u64)> = records
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.path.as_str(),
                r.test_id.as_deref(),
                r.body_bytes,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("GET", "/a", Some("get-1"), 0),
            ("POST", "/b", Some("post-1"), 12)
        ],
        "health checks are not recorded; everything else is, before the kill"
    );

    foo.restart().unwrap();
    assert_eq!(client.get("/d").unwrap().served_by(), Some("east"));
    assert_eq!(
        foo.records().unwrap().len(),
        3,
        "records accumulate across restarts"
    );
}

#[test]
fn envoy_proxies_to_the_upstream_and_the_load_counts_every_request() {
    let out = OutDir::fresh("harness_envoy_and_load").unwrap();
    let mut foo = east_foo(&out).unwrap();
    let ingress = free_addr(EAST_GATEWAY_IP).unwrap();
    let admin = free_addr(EAST_GATEWAY_IP).unwrap();
    let config = out.file("envoy-east.yaml");
    std::fs::write(&config, plain_proxy_config(ingress, admin, foo.addr())).unwrap();
    let envoy = Envoy::start(&EnvoySpec::new("east", &config, admin), &out).unwrap();
    assert!(envoy.loaded_wasm_files().unwrap().is_empty());

    let client = HttpClient::new(ingress, "foo.apps");
    assert_eq!(client.get("/").unwrap().served_by(), Some("east"));

    let load = Load::start(&client, LoadSpec::steady_get("/load", 4, 200)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let report = load.stop().unwrap();
    assert!(
        report.total() >= 40,
        "only {} requests in 0.5 s",
        report.total()
    );
    assert!(report.failures().is_empty(), "{:?}", report.failures());
    assert_eq!(report.by_cluster().get("east"), Some(&report.total()));
    // What the clients counted is what the upstream received, id for id.
    let mut sent: Vec<String> = report.samples.iter().map(|s| s.test_id.clone()).collect();
    let mut received: Vec<String> = foo
        .records()
        .unwrap()
        .into_iter()
        .filter(|r| r.path == "/load")
        .filter_map(|r| r.test_id)
        .collect();
    sent.sort();
    received.sort();
    assert_eq!(sent, received);

    // Without detour, a dead upstream is Envoy's plain 503: the harness must see it as a
    // failure that no cluster answered.
    foo.kill().unwrap();
    let reply = client.get("/").unwrap();
    assert_eq!(reply.status, 503, "{}", reply.summary());
    assert_eq!(reply.served_by(), None);
    let load = Load::start(&client, LoadSpec::steady_get("/dead", 2, 50)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let report = load.stop().unwrap();
    assert!(report.total() > 0);
    assert_eq!(report.failures().len(), report.total());
}

#[test]
fn the_fake_controller_speaks_the_table_protocol() {
    use detour_e2e::client::Request;
    use detour_e2e::fake_controller::{FakeController, Served};
    use detour_filter::table::wire::TableDoc;

    let fake = FakeController::start(free_addr(Ipv4Addr::LOCALHOST).unwrap(), None).unwrap();
    let client = HttpClient::new(fake.addr(), "detour-controller");
    assert_eq!(client.get("/v1/tables/east").unwrap().status, 503);

    let table = TableDoc {
        api_version: detour_filter::table::TABLE_API_VERSION.into(),
        cluster: "east".into(),
        version: "v1".into(),
        schemes: vec![],
    };
    fake.serve_table(&table).unwrap();
    let reply = client.get("/v1/tables/east").unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("etag"), Some("\"v1\""));
    let parsed: TableDoc = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(parsed, table);
    let cached = Request::get("/v1/tables/east").header("if-none-match", "\"v1\"");
    assert_eq!(client.send(cached.clone()).unwrap().status, 304);

    // A long-poll returns as soon as the answer changes, with the new answer.
    let waiting = Request::get("/v1/tables/east?wait=10s").header("if-none-match", "\"v1\"");
    let poller = {
        let client = client.clone();
        std::thread::spawn(move || client.send(waiting).unwrap())
    };
    std::thread::sleep(Duration::from_millis(300));
    fake.serve(Served {
        status: 200,
        etag: "\"garbage\"".into(),
        body: "{not json".into(),
    });
    let reply = poller.join().unwrap();
    assert_eq!(
        (reply.status, reply.body_text().as_str()),
        (200, "{not json")
    );
    assert!(
        reply.latency >= Duration::from_millis(250),
        "{:?}",
        reply.latency
    );
    assert_eq!(fake.requests(), 4);
}
