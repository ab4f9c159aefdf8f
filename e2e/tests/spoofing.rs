//! Issue 3, "no spoofing": a client of the ingress cannot choose where its request goes
//! by sending detour's internal headers, neither while the primary is healthy nor
//! during a failover; and it cannot use them to reach another Envoy cluster (such as
//! the controller, which this Envoy reaches with its own table certificate), nor set
//! Envoy's retries and timeouts with `x-envoy-*` headers (issue 12). Both when Envoy
//! removes them before the filter (as `detour render envoy` configures it) and when the
//! filter has to (as under Istio, where Envoy removes only the route header).

use anyhow::{Context, Result, ensure};
use detour_e2e::client::{HttpClient, Request};
use detour_e2e::envoy::{ingress_only, merge_filter_config};
use detour_e2e::ports::free_addr;
use detour_e2e::setup::Setup;
use detour_e2e::topology::{Topology, wait_served_by};
use std::net::Ipv4Addr;

/// Internal headers a client might forge, each with the value most likely to mislead.
fn forgeries(setup: &Setup) -> Vec<(&'static str, String)> {
    vec![
        // "Start me at south" (group 2: a target of the scheme, but not the one detour
        // picks), or at the primary (dead, during the failover below).
        ("x-detour-route", "2".to_string()),
        ("x-detour-route", "0".to_string()),
        // "Send me to south" by its Envoy cluster name.
        ("x-detour-route", setup.service.envoy_cluster("south")),
        // Any capitalisation.
        ("X-Detour-Route", setup.service.envoy_cluster("south")),
        // "Send me to the primary" (dead, during the failover below).
        ("x-detour-route", setup.service.envoy_cluster("east")),
        // "Send me to the controller's table API, with this Envoy's certificate".
        ("x-detour-route", "detour_controller".to_string()),
        // "I already crossed a gateway: do not fail me over".
        ("x-detour-via", "west".to_string()),
        // "The gateway could not reach its service" (a response header, sent as a
        // request header: stripped all the same).
        ("x-detour-gateway-flags", "UF".to_string()),
        // "At the gateway, hand me to this other service" (none of its services).
        ("x-detour-target", "admin.kube-system".to_string()),
        // Envoy's router's own knobs: no retries, a 1 ms timeout, retry every 5xx.
        ("x-envoy-max-retries", "0".to_string()),
        ("x-envoy-upstream-rq-timeout-ms", "1".to_string()),
        ("x-envoy-upstream-rq-per-try-timeout-ms", "1".to_string()),
        ("x-envoy-retry-on", "5xx".to_string()),
    ]
}

/// Sends every forgery (one per request, then all at once) and checks that `expected`
/// answers each, exactly as it answers a clean request.
fn assert_forgeries_go_to(client: &HttpClient, setup: &Setup, expected: &str) -> Result<()> {
    let all = forgeries(setup);
    let mut requests: Vec<(String, Request)> = all
        .iter()
        .map(|(name, value)| {
            (
                format!("{name}: {value}"),
                Request::get("/").header(name, value),
            )
        })
        .collect();
    let together = all
        .iter()
        .fold(Request::get("/"), |request, (name, value)| {
            request.header(name, value)
        });
    requests.push(("all of them at once".to_string(), together));
    for (what, request) in requests {
        let reply = client.send(request)?;
        ensure!(
            (reply.status, reply.served_by()) == (200, Some(expected)),
            "with {what}, wanted 200 from {expected}, got {} (body {:?})",
            reply.summary(),
            reply.body_text()
        );
    }
    Ok(())
}

/// One more Envoy of east, configured as rendered except that Envoy removes only the
/// route header before the filter runs (as Istio's route patch does), and the filter is
/// told to remove the other detour headers itself.
fn start_filter_stripping_ingress(t: &mut Topology) -> Result<HttpClient> {
    let rendered = std::fs::read_to_string(t.out().file("envoy-east.yaml"))
        .context("reading east's rendered config")?;
    let listen = free_addr(Ipv4Addr::new(127, 0, 1, 1))?;
    let admin = free_addr(Ipv4Addr::new(127, 0, 1, 1))?;
    let mut config = ingress_only(&rendered, listen, admin)?;
    let hcm = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let mutations = hcm["early_header_mutation_extensions"][0]["typed_config"]["mutations"]
        .as_sequence_mut()
        .context("the rendered ingress removes no header early")?;
    mutations.retain(|m| m.get("remove").and_then(|v| v.as_str()) == Some("x-detour-route"));
    ensure!(mutations.len() == 1, "{mutations:?}");
    let config = merge_filter_config(
        &serde_norway::to_string(&config)?,
        &serde_json::json!({"envoyRemovesClientHeaders": false}),
    )?;
    t.add_envoy("east-filter-strips", &config, admin)?;
    let version = t.controller()?.table("east")?.version;
    t.wait_filter_holds("east-filter-strips", &version)?;
    Ok(HttpClient::new(listen, &t.setup().service.authority()))
}

#[test]
fn client_sent_detour_headers_cannot_choose_where_a_request_goes() {
    let mut t = Topology::start(
        "client_sent_detour_headers_cannot_choose_where_a_request_goes",
        Setup::for_tests(),
    )
    .unwrap();
    let setup = t.setup().clone();
    let east = t.ingress("east").unwrap();
    let filter_strips = start_filter_stripping_ingress(&mut t).unwrap();
    let ingresses = [&east, &filter_strips];

    // Healthy primary: every forged request is answered by east, as a clean one is.
    for ingress in ingresses {
        assert_forgeries_go_to(ingress, &setup, "east").unwrap();
    }
    let stripped = "detour_headers_stripped";
    let counted = t
        .envoy("east-filter-strips")
        .unwrap()
        .metric(stripped)
        .unwrap();

    // During a failover: answered by west, the scheme's choice, not by south, not by
    // the dead primary, and not left without failover.
    t.kill_upstream("east").unwrap();
    for ingress in ingresses {
        wait_served_by(ingress, "west", setup.failover_bound()).unwrap();
        assert_forgeries_go_to(ingress, &setup, "west").unwrap();
    }

    // No forged header reached a service: south got no request at all, and the only
    // `x-detour-via` west's foo saw is the one its own gateway set.
    assert!(t.upstream("south").unwrap().records().unwrap().is_empty());
    for record in t.upstream("west").unwrap().records().unwrap() {
        assert_eq!(record.via.as_deref(), Some("west"), "{record:?}");
    }
    // The filter counts what it strips (`/stats/prometheus`)...
    assert!(counted > 0.0, "{stripped} did not move");
    let now = t
        .envoy("east-filter-strips")
        .unwrap()
        .metric(stripped)
        .unwrap();
    assert!(now > counted, "{stripped} did not move");
    // ...and with the rendered configuration it has nothing to strip: Envoy removed
    // every detour header before the filter ran.
    assert_eq!(t.envoy("east").unwrap().metric(stripped).unwrap(), 0.0);
}
