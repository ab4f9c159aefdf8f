//! Issue 16, point 4: the filter inside Gloo Edge, Gloo Gateway and kgateway. Those
//! gateways write their own routes, to clusters named their own way; the filter must
//! recognise the primary under each name to move traffic. One Envoy (east's, as
//! `detour render envoy` writes it, with the real `.wasm`) gets one virtual host per
//! flavour, shaped as that gateway writes it: its own route to the service under its own
//! cluster name (`apps-foo-PORT_gloo-system`, `kube-svc:apps-foo-PORT_apps` and its longer
//! spelling, `kube_apps_foo_PORT`), with detour's start routes before it. East's foo then fails its
//! health checks while it still answers every request: only the filter, finding the
//! scheme by the route's cluster name and starting the request at west, can move the
//! traffic. One more host, Gloo Edge installed in a namespace of its own (`gloo`), has a
//! name the table does not carry, and stays on east: the limit the README states.

use anyhow::{Context, Result, ensure};
use detour_e2e::client::HttpClient;
use detour_e2e::envoy::ingress_only;
use detour_e2e::ports::free_addr;
use detour_e2e::setup::Setup;
use detour_e2e::topology::{Topology, wait_served_by};
use detour_filter::health::Health;
use serde_norway::Value;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// One gateway's way of routing `foo.apps`: the host a client calls, the virtual host
/// and route names it writes, and the Envoy cluster its route names.
#[derive(Clone)]
struct Flavour {
    what: &'static str,
    host: &'static str,
    virtual_host: &'static str,
    route: &'static str,
    cluster: String,
}

fn flavours(port: u16) -> Vec<Flavour> {
    vec![
        // A VirtualService `gloo-system/foo` routing to the Upstream discovery made.
        Flavour {
            what: "Gloo Edge",
            host: "foo.gloo-edge.example",
            virtual_host: "gloo-system_foo",
            route: "gloo-system_foo-route-0-matcher-0",
            cluster: format!("apps-foo-{port}_gloo-system"),
        },
        // An HTTPRoute `apps/foo` with the Service as its backendRef.
        Flavour {
            what: "Gloo Gateway",
            host: "foo.gloo-gateway.example",
            virtual_host: "listener~80~foo_gloo-gateway_example",
            route: "listener~80~foo_gloo-gateway_example-route-0-httproute-foo-apps-0-0-matcher-0",
            cluster: format!("kube-svc:apps-foo-{port}_apps"),
        },
        // The same, from a Gloo release that spelled the Service out in the name.
        Flavour {
            what: "Gloo Gateway, the longer spelling",
            host: "foo.gloo-gateway-long.example",
            virtual_host: "listener~80~foo_gloo-gateway-long_example",
            route: "listener~80~foo_gloo-gateway-long_example-route-0-httproute-foo-apps-0-0-matcher-0",
            cluster: format!("kube-svc:apps-foo-{port}_apps_apps_foo_{port}"),
        },
        Flavour {
            what: "kgateway",
            host: "foo.kgateway.example",
            virtual_host: "listener~80~foo_kgateway_example",
            route: "listener~80~foo_kgateway_example-route-0-httproute-foo-apps-0-0-matcher-0",
            cluster: format!("kube_apps_foo_{port}"),
        },
    ]
}

/// Gloo Edge installed in namespace `gloo` rather than `gloo-system`: its discovered
/// Upstreams, and so their clusters, carry that namespace, which detour cannot know.
fn gloo_elsewhere(port: u16) -> Flavour {
    Flavour {
        what: "Gloo Edge installed in namespace gloo",
        host: "foo.gloo-elsewhere.example",
        virtual_host: "gloo_foo",
        route: "gloo_foo-route-0-matcher-0",
        cluster: format!("apps-foo-{port}_gloo"),
    }
}

/// The primary's cluster in the rendered config.
const PRIMARY: &str = "detour|east|apps|foo";

/// East's ingress with one virtual host per flavour in place of the rendered ones: the
/// flavour's own route to the primary under its name, after detour's routes for start
/// groups 1 and 2 (their chains naming the primary by that name too), and one copy of
/// the primary's rendered cluster under each name.
fn gateway_shaped(
    rendered: &str,
    listen: SocketAddr,
    admin: SocketAddr,
    all: &[Flavour],
) -> Result<String> {
    let mut config = ingress_only(rendered, listen, admin)?;
    let hcm = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let hosts = hcm["route_config"]["virtual_hosts"]
        .as_sequence()
        .context("the rendered ingress has no virtual hosts")?;
    let rendered_host = hosts
        .iter()
        .find(|h| h["name"].as_str() == Some("foo.apps"))
        .context("the rendered ingress has no virtual host foo.apps")?;
    let start_routes: Vec<&Value> = rendered_host["routes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("apps/foo|start-") && !n.contains("start-0"))
        })
        .collect();
    ensure!(
        start_routes.len() == 4,
        "expected detour's routes for start groups 1 and 2 (two method classes each), got {}",
        start_routes.len()
    );
    let mut virtual_hosts = Vec::new();
    for flavour in all {
        let mut routes: Vec<Value> = Vec::new();
        for route in &start_routes {
            let text = serde_norway::to_string(route)?.replace(PRIMARY, &flavour.cluster);
            routes.push(serde_norway::from_str(&text)?);
        }
        routes.push(serde_norway::from_str(&format!(
            "{{name: '{}', match: {{prefix: /}}, route: {{cluster: '{}'}}}}",
            flavour.route, flavour.cluster
        ))?);
        virtual_hosts.push(serde_norway::from_str::<Value>(&format!(
            "{{name: '{}', domains: ['{}', '{}:*']}}",
            flavour.virtual_host, flavour.host, flavour.host
        ))?);
        if let Some(Value::Mapping(host)) = virtual_hosts.last_mut() {
            host.insert("routes".into(), Value::Sequence(routes));
        }
    }
    hcm["route_config"]["virtual_hosts"] = Value::Sequence(virtual_hosts);

    let clusters = config["static_resources"]["clusters"]
        .as_sequence_mut()
        .context("the rendered config has no clusters")?;
    let primary = clusters
        .iter()
        .find(|c| c["name"].as_str() == Some(PRIMARY))
        .cloned()
        .context("the rendered config has no cluster for the primary")?;
    for flavour in all {
        let text = serde_norway::to_string(&primary)?.replace(PRIMARY, &flavour.cluster);
        clusters.push(serde_norway::from_str(&text)?);
    }
    Ok(serde_norway::to_string(&config)?)
}

#[test]
fn the_filter_finds_the_scheme_under_gloo_and_kgateway_cluster_names() -> Result<()> {
    let mut t = Topology::start(
        "the_filter_finds_the_scheme_under_gloo_and_kgateway_cluster_names",
        Setup::for_tests(),
    )?;
    let east = t.layout().member("east")?;
    let port = east.service.port();
    let ip = match east.ingress.ip() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => anyhow::bail!("the harness uses IPv4 loopback"),
    };
    let supported = flavours(port);
    let unsupported = gloo_elsewhere(port);

    // The controller's table names the primary as each supported gateway routes to it.
    let table = t.controller()?.table("east")?;
    let names: Vec<&String> = table
        .schemes
        .iter()
        .filter(|s| s.name == "apps/foo")
        .flat_map(|s| &s.envoy_clusters)
        .collect();
    for flavour in &supported {
        ensure!(
            names.contains(&&flavour.cluster),
            "east's table does not name the primary {} ({}): {names:?}",
            flavour.cluster,
            flavour.what
        );
    }

    let rendered = std::fs::read_to_string(t.out().file("envoy-east.yaml"))
        .context("reading east's rendered config")?;
    let (listen, admin) = (free_addr(ip)?, free_addr(ip)?);
    let mut every = supported.clone();
    every.push(unsupported.clone());
    let config = gateway_shaped(&rendered, listen, admin, &every)?;
    t.add_envoy("east-gateways", &config, admin)?;
    t.wait_filter_holds("east-gateways", &table.version)?;
    let client = |f: &Flavour| HttpClient::new(listen, f.host);

    // Healthy primary: every host is answered by east, through the gateway's own route.
    for flavour in &every {
        wait_served_by(&client(flavour), "east", Duration::from_secs(5))
            .with_context(|| flavour.what)?;
    }

    // East's foo fails its checks but answers every request: the traffic moves only
    // where the filter recognises the route's cluster and starts the request at west.
    t.upstream("east")?.fail_health_checks(true)?;
    let bound = t.setup().failover_bound();
    t.wait_target_health("east", Health::Unhealthy, bound)?;
    let unhealthy = t.controller()?.table("east")?.version;
    t.wait_filter_holds("east-gateways", &unhealthy)?;
    for flavour in &supported {
        let reply = wait_served_by(&client(flavour), "west", Duration::from_secs(5))
            .with_context(|| format!("{}: routes to {}", flavour.what, flavour.cluster))?;
        ensure!(reply.status == 200, "{}: {}", flavour.what, reply.summary());
        // And it stays there: ten in a row from west.
        for _ in 0..10 {
            let reply = client(flavour).get("/")?;
            ensure!(
                reply.served_by() == Some("west"),
                "{}: after the switch, {}",
                flavour.what,
                reply.summary()
            );
        }
    }
    // A name the table does not carry: the filter leaves the request alone, east answers.
    for _ in 0..10 {
        let reply = client(&unsupported).get("/")?;
        ensure!(
            reply.served_by() == Some("east"),
            "{} ({}): {}",
            unsupported.what,
            unsupported.cluster,
            reply.summary()
        );
    }
    // West's foo saw them through west's gateway, as detour's start route sends them.
    let records = t.upstream("west")?.records()?;
    ensure!(
        records.iter().any(|r| r.via.as_deref() == Some("west")),
        "west's foo saw no request through west's gateway"
    );
    Ok(())
}
