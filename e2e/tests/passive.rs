//! Issue 3, passive detection on its own: the table (served by a fake controller) says
//! every target is Healthy and never changes, so whatever the filter does here it does
//! from what it sees of its own requests.
//!
//! - A request that never reached the dead primary (connect failure) goes on to the
//!   next target whatever its method (Envoy's router retries it), is delivered once, and
//!   this Envoy ejects east for all its workers.
//! - With both failover targets down as well, there is no ping-pong between clusters:
//!   each request makes at most one attempt per target (each has one instance), and the
//!   client gets a prompt 503 that says why.

use anyhow::Result;
use bytes::Bytes;
use detour_e2e::client::Request;
use detour_e2e::envoy::Envoy;
use detour_e2e::fake_controller::Served;
use detour_e2e::setup::{ControllerKind, Setup};
use detour_e2e::table::table_for;
use detour_e2e::topology::{Topology, wait_served_by};
use detour_e2e::wait::{Probe, wait_until};
use detour_filter::health::Health;
use std::collections::BTreeSet;
use std::time::Duration;

/// Longest a client may wait for the 503 when nothing can serve it: two failed attempts
/// on loopback take milliseconds; this is slack for a busy machine.
const PROMPT: Duration = Duration::from_secs(1);
const REQUESTS: usize = 20;

fn counter(envoy: &Envoy, name: &str) -> Result<u64> {
    Ok(envoy.stat(name)?.unwrap_or(0))
}

/// Attempts east's Envoy made, per target: connect failures to its own foo and to
/// west's (dead) gateway, requests sent to south's gateway.
fn attempts(t: &mut Topology) -> Result<[u64; 3]> {
    let service = t.setup().service.clone();
    let east = t.envoy("east")?;
    let stat = |cluster: &str, name: &str| {
        counter(
            east,
            &format!("cluster.{}.{name}", service.envoy_cluster(cluster)),
        )
    };
    Ok([
        stat("east", "upstream_cx_connect_fail")?,
        stat("west", "upstream_cx_connect_fail")?,
        stat("south", "upstream_rq_total")?,
    ])
}

/// Requests south's gateway received (no health probes here: the controller is fake).
fn south_gateway_requests(t: &mut Topology) -> Result<u64> {
    counter(t.envoy("south")?, "http.detour_gateway.downstream_rq_total")
}

#[test]
fn passive_detection_alone_replays_what_never_arrived_and_never_ping_pongs() {
    let setup = Setup {
        controller: ControllerKind::External,
        ..Setup::for_tests()
    };
    let mut t = Topology::start_unconverged(
        "passive_detection_alone_replays_what_never_arrived_and_never_ping_pongs",
        setup,
    )
    .unwrap();
    let setup = t.setup().clone();
    let fake = t.start_fake_controller().unwrap();
    let doc = table_for(&setup, "east", "1", |_| Health::Healthy);
    fake.serve(Served {
        status: 200,
        etag: "\"1\"".into(),
        body: Bytes::from(serde_json::to_vec(&doc).unwrap()),
    });
    // (West's and south's filters refuse it, a table for another cluster; only east's
    // matters here.)
    t.wait_filter_holds("east", "1").unwrap();
    let east = t.ingress("east").unwrap();
    wait_served_by(&east, "east", Duration::from_secs(10)).unwrap();

    // East's foo dies. A POST (not replayable once delivered) finds nobody listening:
    // it never reached east, so it goes on to west, and is delivered exactly once.
    t.kill_upstream("east").unwrap();
    let post = east
        .send(Request::post("/", "an order").header("x-test-id", "the-post"))
        .unwrap();
    assert_eq!(
        (post.status, post.served_by()),
        (200, Some("west")),
        "{}",
        post.summary()
    );
    let delivered: Vec<(String, u64)> = ["east", "west", "south"]
        .into_iter()
        .flat_map(|c| {
            t.upstream(c)
                .unwrap()
                .records()
                .unwrap()
                .into_iter()
                .filter(|r| r.test_id.as_deref() == Some("the-post"))
                .map(move |r| (c.to_string(), r.body_bytes))
        })
        .collect();
    // Once, at west, with its body.
    assert_eq!(delivered, [("west".to_string(), "an order".len() as u64)]);
    // This Envoy saw it (the controller, fake, says all is well): east is ejected, and
    // the next request starts at west.
    wait_until("east's Envoy ejects east", PROMPT * 5, || {
        let n = t.envoy("east")?.metric("detour_ejections")?;
        let next = east.get("/")?;
        Ok(if n >= 1.0 {
            Probe::Ready(())
        } else {
            Probe::NotYet(format!("{n} ejections; {}", next.summary()))
        })
    })
    .unwrap();
    let failed_over = t
        .envoy("east")
        .unwrap()
        .metric("detour_failover_apps_foo_group_1")
        .unwrap();
    east.get("/").unwrap();
    assert_eq!(
        t.envoy("east")
            .unwrap()
            .metric("detour_failover_apps_foo_group_1")
            .unwrap(),
        failed_over + 1.0,
        "a request after the ejection did not start at west"
    );

    // Now both failover targets are down too: west's whole Envoy (its gateway refuses
    // connections) and south's foo (its gateway answers, but cannot reach it).
    t.envoy("west").unwrap().kill().unwrap();
    t.kill_upstream("south").unwrap();
    let mut reasons = BTreeSet::new();
    let mut remote = [0u64; 2];
    for i in 0..REQUESTS {
        let before = attempts(&mut t).unwrap();
        let gateway_before = south_gateway_requests(&mut t).unwrap();
        let request = if i % 2 == 0 {
            Request::get("/")
        } else {
            Request::post("/", "x")
        };
        let reply = east.send(request).unwrap();
        let after = attempts(&mut t).unwrap();
        let made: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        let crossed = south_gateway_requests(&mut t).unwrap() - gateway_before;

        assert_eq!(reply.status, 503, "request {i}: {}", reply.summary());
        let reason = reply.detour_reason().map(str::to_string);
        assert!(reason.is_some(), "request {i}: 503 without x-detour-reason");
        reasons.extend(reason);
        assert!(
            reply.latency < PROMPT,
            "request {i} took {:?}: {}",
            reply.latency,
            reply.summary()
        );
        // Never twice to one target (each has one instance here): at most one attempt
        // per target (east, west, south), whichever the filter started at.
        assert!(
            made.iter().all(|n| *n <= 1),
            "request {i}: attempts on [east, west, south]: {made:?}"
        );
        // South's gateway saw exactly what east's Envoy sent it: nothing came back
        // around through another cluster.
        assert_eq!(
            crossed, made[2],
            "request {i}: south's gateway got {crossed}"
        );
        remote[0] += made[1];
        remote[1] += made[2];
    }
    // Both kinds of dead target were really tried (and then avoided).
    assert!(
        remote[0] >= 1 && remote[1] >= 1,
        "attempts on west's dead gateway and through south's: {remote:?}"
    );
    eprintln!(
        "{REQUESTS} requests with every target down: attempts on west {}, on south {}; \
         reasons: {reasons:?}",
        remote[0], remote[1]
    );
}
