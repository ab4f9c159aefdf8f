//! Issue 3, "no spoofing": a client of the ingress cannot choose where its request goes
//! by sending detour's internal headers, neither while the primary is healthy nor
//! during a failover; and it cannot use them to reach another Envoy cluster (such as
//! the controller, which this Envoy reaches with its own table certificate).

use anyhow::{Result, ensure};
use detour_e2e::client::{HttpClient, Request};
use detour_e2e::setup::Setup;
use detour_e2e::topology::{Topology, wait_served_by};

/// Internal headers a client might forge, each with the value most likely to mislead.
fn forgeries(setup: &Setup) -> Vec<(&'static str, String)> {
    vec![
        // "Send me to south" (a target of the scheme, but not the one detour picks).
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

#[test]
fn client_sent_detour_headers_cannot_choose_where_a_request_goes() {
    let mut t = Topology::start(
        "client_sent_detour_headers_cannot_choose_where_a_request_goes",
        Setup::for_tests(),
    )
    .unwrap();
    let setup = t.setup().clone();
    let east = t.ingress("east").unwrap();

    // Healthy primary: every forged request is answered by east, as a clean one is.
    assert_forgeries_go_to(&east, &setup, "east").unwrap();
    let stripped = "detour_headers_stripped";
    let counted = t.envoy("east").unwrap().metric(stripped).unwrap();

    // During a failover: answered by west, the scheme's choice, not by south, not by
    // the dead primary, and not left without failover.
    t.kill_upstream("east").unwrap();
    wait_served_by(&east, "west", setup.failover_bound()).unwrap();
    assert_forgeries_go_to(&east, &setup, "west").unwrap();

    // No forged header reached a service: south got no request at all, and the only
    // `x-detour-via` west's foo saw is the one its own gateway set.
    assert!(t.upstream("south").unwrap().records().unwrap().is_empty());
    for record in t.upstream("west").unwrap().records().unwrap() {
        assert_eq!(record.via.as_deref(), Some("west"), "{record:?}");
    }
    // The filter counts what it strips (`/stats/prometheus`).
    assert!(counted > 0.0, "{stripped} did not move");
    let now = t.envoy("east").unwrap().metric(stripped).unwrap();
    assert!(now > counted, "{stripped} did not move");
}
