//! The committed manifests agree with the code that must agree with them:
//!
//! * `manifests/envoy/*.yaml` is what `detour render envoy` prints now (the real binary);
//!   `DETOUR_BLESS=1 cargo test -p detour --test manifests` rewrites them.
//! * `manifests/istio/`: the WasmPlugin's `pluginConfig`, converted to JSON as Istio does,
//!   is a configuration the filter's own parser accepts; the route patch routes on the
//!   header the filter sets; the added clusters carry the names, addresses and peer
//!   identities the controller's tables and `detour render envoy` use
//!   (docs/internals.md), for the federation of `manifests/istio/federation.yaml`.

// Helpers of a test file: a broken expectation is a test failure, said where it broke.
#![allow(clippy::expect_used, clippy::panic)]

use detour_core::model::{CONTROLLER_CLUSTER, ServiceName, TargetRef, parse_host};
use detour_core::pki::identity::{ClusterRole, ControllerRole, Identity};
use detour_filter::config::{DEFAULT_ROUTE_HEADER, FilterConfig};
use serde_norway::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_detour"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run detour");
    assert!(
        out.status.success(),
        "detour {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Compares with the committed file, or rewrites it under `DETOUR_BLESS=1`.
fn check_committed(path: &str, now: &str) {
    let file = root().join(path);
    if std::env::var_os("DETOUR_BLESS").is_some() {
        std::fs::write(&file, now).expect("write");
        return;
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        committed == now,
        "{path} drifted from `detour render envoy`; if the change is intended, run \
         DETOUR_BLESS=1 cargo test -p detour --test manifests and commit the result"
    );
}

/// The flags the examples in manifests/envoy/README.md are rendered with.
const RENDER: &[&str] = &[
    "render",
    "envoy",
    "--config",
    "controller/examples/config",
    "--cluster",
    "east",
    "--ingress",
    "127.0.1.1:10000",
    "--admin",
    "127.0.1.1:9901",
    "--controller",
    "127.0.0.1:8080",
    "--wasm",
    "/etc/envoy/detour_filter.wasm",
];
/// Where the mTLS example says the certificates are.
const CERTS: &str = "/etc/detour/certs";

#[test]
fn the_plain_envoy_example_is_what_render_envoy_prints() {
    check_committed("manifests/envoy/east.yaml", &run(RENDER));
}

#[test]
fn the_mtls_envoy_example_is_what_render_envoy_prints() {
    // `render --certs` checks the files, so render with real ones, then put the path
    // the example documents in place of the temporary one.
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let certs = certs.to_str().expect("UTF-8 path");
    run(&[
        "certs",
        "init",
        "--config",
        "controller/examples/config",
        "--out",
        certs,
    ]);
    let mut args = RENDER.to_vec();
    args.extend(["--certs", certs]);
    let rendered = run(&args).replace(certs, CERTS);
    check_committed("manifests/envoy/east-mtls.yaml", &rendered);
}

// --- Istio ---------------------------------------------------------------------------

fn istio_documents() -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    let dir = root().join("manifests/istio");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("manifests/istio")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).expect("YAML");
            if !value.is_null() {
                docs.push((file.display().to_string(), value));
            }
        }
    }
    docs
}

fn find<'a>(docs: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in manifests/istio"))
}

fn text<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {v:?}"))
}

/// `pluginConfig` as Istio hands it to the filter: the Struct marshalled with protojson.
/// Struct numbers are doubles, written without a fraction when they have none (so 30
/// stays `30` and 0.5 is `0.5`); everything else maps one to one.
fn protojson(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(n) => {
            let f = n.as_f64().expect("a number");
            if f.fract() == 0.0 && f.abs() < 1e21 {
                serde_json::json!(f as i64)
            } else {
                serde_json::json!(f)
            }
        }
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Sequence(items) => items.iter().map(protojson).collect(),
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| (text(k, "key").to_string(), protojson(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        Value::Tagged(t) => protojson(&t.value),
    }
}

/// The federation the Istio manifests are written for: gateway of each cluster, and the
/// failover targets of the schemes whose primary runs in `cluster`.
struct Federation {
    gateways: BTreeMap<String, (String, u16)>,
    primaries: Vec<TargetRef>,
    remote_targets: BTreeSet<TargetRef>,
}

fn federation(docs: &[(String, Value)], cluster: &str) -> Federation {
    let mut f = Federation {
        gateways: BTreeMap::new(),
        primaries: Vec::new(),
        remote_targets: BTreeSet::new(),
    };
    let target = |c: &Value, name: &Value, ns: &Value| TargetRef {
        cluster: text(c, "cluster").to_string(),
        service: ServiceName::new(text(ns, "namespace"), text(name, "name")),
    };
    for (_, d) in docs {
        let spec = &d["spec"];
        match d["kind"].as_str() {
            Some("MemberCluster") => {
                let gw = &spec["gateway"];
                let port = gw["port"].as_u64().unwrap_or(15443) as u16;
                f.gateways.insert(
                    text(&d["metadata"]["name"], "name").to_string(),
                    (text(&gw["address"], "address").to_string(), port),
                );
            }
            Some("FailoverScheme") if spec["primary"]["cluster"].as_str() == Some(cluster) => {
                let p = &spec["primary"];
                f.primaries
                    .push(target(&p["cluster"], &p["name"], &p["namespace"]));
                for group in spec["failoverGroups"].as_sequence().expect("groups") {
                    for t in group["priorityGroup"].as_sequence().expect("priorityGroup") {
                        for s in t["services"].as_sequence().expect("services") {
                            f.remote_targets.insert(target(
                                &t["cluster"],
                                &s["name"],
                                &s["namespace"],
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    f
}

#[test]
fn the_wasmplugin_config_is_one_the_filter_accepts_as_istio_delivers_it() {
    let docs = istio_documents();
    let plugin = find(&docs, "WasmPlugin", "detour");
    assert_eq!(
        plugin["apiVersion"].as_str(),
        Some("extensions.istio.io/v1alpha1")
    );
    let json = protojson(&plugin["spec"]["pluginConfig"]).to_string();
    // Durations given as numbers reach the filter as JSON numbers.
    assert!(json.contains("\"longPoll\":30"), "{json}");
    let config = FilterConfig::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(config.controller.envoy_cluster, CONTROLLER_CLUSTER);
    assert_eq!(config.controller.long_poll.as_secs(), 30);
    assert_eq!(config.route_header, DEFAULT_ROUTE_HEADER);
    assert!(
        federation(&docs, &config.cluster)
            .gateways
            .contains_key(&config.cluster)
    );
    // Outbound side only, and a broken filter lets traffic through.
    assert_eq!(plugin["spec"]["match"][0]["mode"].as_str(), Some("CLIENT"));
    assert_eq!(plugin["spec"]["failStrategy"].as_str(), Some("FAIL_OPEN"));
}

#[test]
fn the_route_patch_reroutes_each_primary_on_the_filters_header() {
    let docs = istio_documents();
    let plugin = find(&docs, "WasmPlugin", "detour");
    let config = FilterConfig::parse(
        protojson(&plugin["spec"]["pluginConfig"])
            .to_string()
            .as_bytes(),
    )
    .expect("config");
    let fed = federation(&docs, &config.cluster);
    assert!(!fed.primaries.is_empty());
    let patches = find(&docs, "EnvoyFilter", "detour-routes")["spec"]["configPatches"]
        .as_sequence()
        .expect("configPatches");
    // First, a client's route header goes before any route is chosen.
    let (early, routes): (Vec<_>, Vec<_>) = patches
        .iter()
        .partition(|p| p["applyTo"].as_str() == Some("NETWORK_FILTER"));
    let [early] = early.as_slice() else {
        panic!("one NETWORK_FILTER patch expected, got {}", early.len())
    };
    assert_eq!(
        early["match"]["listener"]["filterChain"]["filter"]["name"].as_str(),
        Some("envoy.filters.network.http_connection_manager")
    );
    assert_eq!(early["patch"]["operation"].as_str(), Some("MERGE"));
    let mutation = &early["patch"]["value"]["typed_config"]["early_header_mutation_extensions"][0];
    assert_eq!(
        mutation["name"].as_str(),
        Some("envoy.http.early_header_mutation.header_mutation")
    );
    assert_eq!(
        mutation["typed_config"]["mutations"][0]["remove"].as_str(),
        Some(config.route_header.as_str())
    );
    // Then, per primary, a route per start group (header = the group's index; none for
    // the primary), inserted before Istio's own route, whose chain begins at that group.
    // The primary's own cluster strips gateway marks from its service's answers.
    let (clusters, routes): (Vec<_>, Vec<_>) = routes
        .into_iter()
        .partition(|p| p["applyTo"].as_str() == Some("CLUSTER"));
    for patch in &clusters {
        assert_eq!(patch["patch"]["operation"].as_str(), Some("MERGE"));
        let filters = &patch["patch"]["value"]["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
            ["http_filters"];
        assert_eq!(
            filters[0]["typed_config"]["mutations"]["response_mutations"][0]["remove"].as_str(),
            Some("x-detour-gateway-flags")
        );
    }
    let stripped: BTreeSet<String> = clusters
        .iter()
        .map(|p| text(&p["match"]["cluster"]["service"], "service").to_string())
        .collect();
    let primaries_fqdn: BTreeSet<String> = fed
        .primaries
        .iter()
        .map(|p| {
            format!(
                "{}.{}.svc.cluster.local",
                p.service.name, p.service.namespace
            )
        })
        .collect();
    assert_eq!(stripped, primaries_fqdn, "one cluster patch per primary");
    let mut starts: BTreeMap<_, Vec<Option<String>>> = BTreeMap::new();
    for patch in routes {
        assert_eq!(patch["applyTo"].as_str(), Some("HTTP_ROUTE"));
        assert_eq!(patch["patch"]["operation"].as_str(), Some("INSERT_BEFORE"));
        assert_eq!(
            patch["match"]["routeConfiguration"]["vhost"]["route"]["name"].as_str(),
            Some("default")
        );
        let vhost = text(
            &patch["match"]["routeConfiguration"]["vhost"]["name"],
            "vhost",
        );
        let (host, port) = vhost.rsplit_once(':').expect("HOST:PORT");
        port.parse::<u16>().expect("a port");
        let primary = fed
            .primaries
            .iter()
            .find(|p| {
                format!(
                    "{}.{}.svc.cluster.local",
                    p.service.name, p.service.namespace
                ) == host
            })
            .unwrap_or_else(|| panic!("{vhost}: no scheme's primary in {}", config.cluster));
        let service = &primary.service;
        let route = &patch["patch"]["value"];
        assert_eq!(route["match"]["prefix"].as_str(), Some("/"));
        let start = route["match"]["headers"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|h| h["name"].as_str() == Some(config.route_header.as_str()))
            .map(|h| text(&h["string_match"]["exact"], "start").to_string());
        let plugin = &route["route"]["inline_cluster_specifier_plugin"]["extension"];
        assert_eq!(
            plugin["name"].as_str(),
            Some("envoy.router.cluster_specifier_plugin.priority_group")
        );
        let first = text(
            &plugin["typed_config"]["priority_groups"][0]["clusters"][0]["cluster_name"],
            "first cluster",
        );
        if start.is_none() {
            // Without the header, the primary under Istio's name comes first.
            assert_eq!(first, format!("outbound|{port}||{host}"));
        } else {
            assert!(first.starts_with("detour|"), "{first}");
        }
        // The chain is the one `render envoy` writes (two attempts per group: Istio's
        // endpoints and the gateways are several): from the start group on, then back
        // to the groups it skipped.
        let chain: Vec<usize> = plugin["typed_config"]["priority_groups"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|g| {
                text(&g["name"], "group name")
                    .strip_prefix("group-")
                    .and_then(|n| n.parse().ok())
                    .expect("group-N")
            })
            .collect();
        let groups = chain.iter().collect::<BTreeSet<_>>().len();
        let start_group = start
            .as_deref()
            .map_or(0, |s| s.parse().expect("a group index"));
        assert_eq!(
            chain,
            detour_filter::chain::attempts(&vec![2; groups], start_group),
            "{host}: start {start_group}"
        );
        assert_eq!(
            route["route"]["retry_policy"]["num_retries"].as_u64(),
            Some(chain.len() as u64 - 1)
        );
        assert_eq!(
            route["route"]["retry_policy"]["refresh_cluster_on_retry"].as_bool(),
            Some(true)
        );
        // The remote gateway routes by NAME.NAMESPACE.
        assert_eq!(
            route["route"]["host_rewrite_literal"].as_str(),
            Some(service.authority().as_str())
        );
        assert_eq!(
            route["request_headers_to_remove"][0].as_str(),
            Some(config.route_header.as_str())
        );
        starts.entry(service.clone()).or_default().push(start);
    }
    let patched: BTreeSet<_> = starts.keys().cloned().collect();
    for (service, list) in &starts {
        // The route without the header comes last: it would match every request.
        assert_eq!(list.last(), Some(&None), "{service:?}: {list:?}");
    }
    let primaries: BTreeSet<_> = fed.primaries.iter().map(|p| p.service.clone()).collect();
    assert_eq!(patched, primaries, "one route patch per primary");
}

#[test]
fn the_added_clusters_are_the_tables_targets_over_mtls() {
    let docs = istio_documents();
    let plugin = find(&docs, "WasmPlugin", "detour");
    let config = FilterConfig::parse(
        protojson(&plugin["spec"]["pluginConfig"])
            .to_string()
            .as_bytes(),
    )
    .expect("config");
    let fed = federation(&docs, &config.cluster);
    let patches = find(&docs, "EnvoyFilter", "detour-clusters")["spec"]["configPatches"]
        .as_sequence()
        .expect("configPatches");
    let mut names = BTreeSet::new();
    for patch in patches {
        assert_eq!(patch["applyTo"].as_str(), Some("CLUSTER"));
        assert_eq!(patch["patch"]["operation"].as_str(), Some("ADD"));
        let cluster = &patch["patch"]["value"];
        let name = text(&cluster["name"], "name");
        names.insert(name.to_string());
        assert_eq!(
            cluster["load_assignment"]["cluster_name"].as_str(),
            Some(name)
        );
        let address = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"];
        let endpoint = (
            text(&address["address"], "address").to_string(),
            address["port_value"].as_u64().expect("port") as u16,
        );
        let tls = &cluster["transport_socket"]["typed_config"];
        let ctx = &tls["common_tls_context"];
        let (role, peer) = if name == CONTROLLER_CLUSTER {
            assert_eq!(
                Some(format!("{}:{}", endpoint.0, endpoint.1).as_str()),
                Some(config.controller.authority.as_str()),
                "the controller cluster points where the filter's authority says"
            );
            (
                ClusterRole::Table,
                Identity::Controller(ControllerRole::Server),
            )
        } else {
            let target = fed
                .remote_targets
                .iter()
                .find(|t| t.envoy_cluster() == name)
                .unwrap_or_else(|| panic!("{name}: not a failover target of {}", config.cluster));
            assert_eq!(
                fed.gateways.get(&target.cluster),
                Some(&endpoint),
                "{name} points at {}'s gateway",
                target.cluster
            );
            (
                ClusterRole::Envoy,
                Identity::cluster(&target.cluster, ClusterRole::Gateway),
            )
        };
        // SDS files of the Secret detour-mtls-client, in a watched directory: the kubelet's
        // swap of a renewed Secret reaches the running sidecar.
        let mount = "/etc/detour/mtls";
        let source = |sds: &serde_norway::Value, secret: &str| {
            assert_eq!(sds["name"].as_str(), Some(secret), "{name}");
            let source = &sds["sds_config"]["path_config_source"];
            assert_eq!(
                source["watched_directory"]["path"].as_str(),
                Some(mount),
                "{name}"
            );
            source["path"].as_str().map(str::to_string)
        };
        assert_eq!(
            source(&ctx["tls_certificate_sds_secret_configs"][0], role.as_str()),
            Some(format!("{mount}/{}.json", role.as_str())),
            "{name}"
        );
        let validation = &ctx["combined_validation_context"];
        assert_eq!(
            source(&validation["validation_context_sds_secret_config"], "ca"),
            Some(format!("{mount}/ca.json"))
        );
        let san = &validation["default_validation_context"]["match_typed_subject_alt_names"][0];
        assert_eq!(san["san_type"].as_str(), Some("URI"));
        assert_eq!(
            san["matcher"]["exact"].as_str(),
            Some(peer.uri().as_str()),
            "{name}"
        );
        let dns = matches!(
            parse_host(&endpoint.0),
            Ok(detour_core::model::Host::Name(_))
        );
        assert_eq!(
            tls["sni"].as_str(),
            dns.then_some(endpoint.0.as_str()),
            "{name}"
        );
    }
    let mut wanted: BTreeSet<String> = fed
        .remote_targets
        .iter()
        .map(TargetRef::envoy_cluster)
        .collect();
    wanted.insert(CONTROLLER_CLUSTER.to_string());
    assert_eq!(names, wanted);
}

// --- Helm chart --------------------------------------------------------------------------

/// Every `--flag` the chart's Deployment passes to `detour serve` is one `serve` knows.
/// (Rendering and validation of the chart are in manifests/tests, with the Helm SDK.)
#[test]
fn the_chart_passes_only_flags_serve_accepts() {
    let template =
        std::fs::read_to_string(root().join("manifests/helm/detour/templates/deployment.yaml"))
            .expect("deployment template");
    let flags: BTreeSet<&str> = template
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- --"))
        .map(|f| f.split(['=', ' ']).next().unwrap_or_default())
        .collect();
    assert!(
        flags.contains("kubernetes") && flags.contains("ops-listen"),
        "{flags:?}"
    );
    let help = run(&["serve", "--help"]);
    if !help.contains("--kubernetes") {
        // Kubernetes mode (issue 5) is not merged yet: nothing to compare with.
        eprintln!("skipped: this `detour serve` has no --kubernetes yet");
        return;
    }
    for flag in flags {
        assert!(
            help.contains(&format!("--{flag}")),
            "`detour serve` has no --{flag}"
        );
    }
}
