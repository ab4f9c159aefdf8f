//! Issue 16, what a failover target may be (Gloo Federation parity): several targets
//! sharing one priority group split its traffic by their weights, and a target may be
//! another service (name and namespace) than the primary — Gloo's own example, `blue`
//! failing over to `green` — which receives the request with its own authority.

use anyhow::Context;
use detour_e2e::client::{Reply, Request};
use detour_e2e::load::{Load, LoadSpec, Sample, summaries};
use detour_e2e::setup::{Service, Setup};
use detour_e2e::topology::{Topology, wait_served_by};
use detour_e2e::upstream::{Answer, Record};
use detour_filter::health::Health;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Requests counted for the split, and the share the heavier target must get.
const SPLIT_REQUESTS: usize = 400;
const HEAVY_SHARE: f64 = 0.75;
/// 75% ± 7%: about three standard deviations of a fair 3:1 draw of 400 (±8.7
/// requests), while a 1:1 split (50%) or a group that sends all to one target falls
/// far outside.
const TOLERANCE: f64 = 0.07;

#[test]
fn two_targets_of_one_group_share_its_traffic_by_weight() {
    // east → [west ×3, south ×1]
    let mut t = Topology::start(
        "two_targets_of_one_group_share_its_traffic_by_weight",
        Setup {
            failover_groups: vec![vec!["west".into(), "south".into()]],
            weights: [("west".to_string(), 3), ("south".to_string(), 1)].into(),
            ..Setup::for_tests()
        },
    )
    .unwrap();
    // The primary down, for the controller and for every VM of east's filter: every
    // request starts at group 1, whatever passive detection saw.
    t.kill_upstream("east").unwrap();
    let bound = t.setup().failover_bound();
    t.wait_target_health("east", Health::Unhealthy, bound)
        .unwrap();
    t.wait_filter_current("east").unwrap();

    // One request per connection, so that no connection's history can decide it.
    let east = t.ingress("east").unwrap().without_keep_alive();
    let mut by_cluster: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed: Vec<String> = Vec::new();
    for _ in 0..SPLIT_REQUESTS {
        let reply = east.get("/").unwrap();
        match reply.served_by() {
            Some(cluster) if reply.status == 200 => {
                *by_cluster.entry(cluster.to_string()).or_default() += 1;
            }
            _ => failed.push(reply.summary()),
        }
    }
    let west = by_cluster.get("west").copied().unwrap_or(0);
    let south = by_cluster.get("south").copied().unwrap_or(0);
    let share = west as f64 / SPLIT_REQUESTS as f64;
    eprintln!(
        "{SPLIT_REQUESTS} GETs with east down: {by_cluster:?}, west's share {:.1}% (weights 3:1)",
        share * 100.0
    );
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    assert_eq!(west + south, SPLIT_REQUESTS, "answered by {by_cluster:?}");
    assert!(
        (share - HEAVY_SHARE).abs() <= TOLERANCE,
        "west (weight 3) got {west} and south (weight 1) {south} of {SPLIT_REQUESTS}: \
         {:.1}%, not 75% ± 7%",
        share * 100.0
    );
    // The upstreams agree with what the client saw.
    let received = |c: &str| t.records(c).unwrap().len();
    assert_eq!((received("west"), received("south")), (west, south));
}

/// Requests that must complete before the kill (a warm, steady load) and after it.
const BEFORE: usize = 60;
const AFTER: usize = 150;
const PATIENCE: Duration = Duration::from_secs(20);

#[test]
fn blue_fails_over_to_green_in_another_namespace_with_greens_authority() {
    let blue = Service::new("apps", "blue");
    let green = Service::new("web", "green");
    // Gloo Federation's failover guide: blue in east, green (another service, in
    // another namespace) in west.
    let mut t = Topology::start(
        "blue_fails_over_to_green_in_another_namespace_with_greens_authority",
        Setup {
            clusters: vec!["east".into(), "west".into()],
            service: blue.clone(),
            services: [("west".to_string(), green.clone())].into(),
            failover_groups: vec![vec!["west".into()]],
            ..Setup::for_tests()
        },
    )
    .unwrap();
    // Clients only ever name blue (`Host: blue.apps`).
    let east = t.ingress("east").unwrap();
    assert_eq!(east.authority(), blue.authority());

    // A client cannot send its request to green while blue is up.
    let spoofed = east
        .send(Request::get("/").header("x-detour-target", &green.authority()))
        .unwrap();
    assert_eq!(spoofed.served_by(), Some("east"), "{}", spoofed.summary());

    // GETs under load, some held by the upstream so that some are in flight at the kill.
    let load = Load::start(
        &east,
        LoadSpec {
            workers: 6,
            pace: Some(Duration::from_millis(50)),
            mix: vec![Request::get("/"), Request::get("/?delay_ms=100")],
            max_duration: Duration::from_secs(60),
        },
    )
    .unwrap();
    load.wait_completed_after(load.started(), BEFORE, PATIENCE)
        .unwrap();
    let killed = t.kill_upstream("east").unwrap();
    let dead = Instant::now();
    load.wait_completed_after(dead, AFTER, PATIENCE).unwrap();
    let report = load.stop().unwrap();
    eprintln!(
        "{} GETs, {:?}; first answer from west sent {:?} after the kill",
        report.total(),
        report.by_cluster(),
        report
            .first_served_by("west", killed)
            .map(|s| s.sent - killed)
    );

    // No GET lost.
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "{} of {} GETs failed: {:#?}",
        failures.len(),
        report.total(),
        summaries(failures.iter().copied())
    );
    // After the kill, west answers every request.
    let elsewhere: Vec<&Sample> = report
        .samples
        .iter()
        .filter(|s| s.sent >= dead && s.served_by() != Some("west"))
        .collect();
    assert!(elsewhere.is_empty(), "{:#?}", summaries(elsewhere));
    // Requests in flight at the kill were carried on to green: sent before it,
    // answered by west.
    let rescued = report
        .samples
        .iter()
        .filter(|s| s.sent < killed && s.served_by() == Some("west"))
        .count();
    eprintln!("in flight at the kill and answered by green: {rescued}");
    assert!(rescued > 0, "no request was in flight at the kill");

    // West's green received every request west answered, with green's authority (the
    // client sent blue's), through west's gateway.
    let records: BTreeMap<String, Record> = t
        .records("west")
        .unwrap()
        .into_iter()
        .filter_map(|(_, r)| Some((r.test_id.clone()?, r)))
        .collect();
    let from_west: BTreeSet<&str> = report
        .samples
        .iter()
        .filter(|s| s.served_by() == Some("west"))
        .map(|s| s.test_id.as_str())
        .collect();
    assert!(!from_west.is_empty(), "west answered nothing");
    let missing: Vec<&&str> = from_west
        .iter()
        .filter(|id| !records.contains_key(**id))
        .collect();
    assert!(
        missing.is_empty(),
        "answered by west, never recorded by west's green: {missing:?}"
    );
    let wrong: Vec<&Record> = records
        .values()
        .filter(|r| {
            r.authority.as_deref() != Some(green.authority().as_str())
                || r.via.as_deref() != Some("west")
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "green saw another authority than {:?}, or a request not through west's \
         gateway: {:#?}",
        green.authority(),
        wrong.iter().take(5).collect::<Vec<_>>()
    );

    // One answer read whole: green's own (the only service west runs), for `blue.apps`.
    let reply = wait_served_by(&east, "west", t.setup().failover_bound()).unwrap();
    assert_eq!(
        answer(&reply).unwrap().service,
        green.qualified(),
        "{reply:?}"
    );
    // A client naming a target itself changes nothing: the request still reaches green
    // with green's authority (east's Envoy removes the header, or sets its own).
    let spoofed = east
        .send(
            Request::get("/?spoofed")
                .header("x-detour-target", &blue.authority())
                .header(detour_e2e::client::TEST_ID, "spoofed-target"),
        )
        .unwrap();
    assert_eq!(spoofed.served_by(), Some("west"), "{}", spoofed.summary());
    assert_eq!(answer(&spoofed).unwrap().service, green.qualified());
    let seen = t
        .records("west")
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .find(|r| r.test_id.as_deref() == Some("spoofed-target"))
        .expect("green recorded the spoofed request");
    assert_eq!(seen.authority.as_deref(), Some(green.authority().as_str()));

    // The filter started later requests at group 1 (green), as Prometheus scrapes it.
    let envoy = t.envoy("east").unwrap();
    let failovers = envoy.metric("detour_failover_apps_blue_group_1").unwrap();
    eprintln!("east's Envoy: failed over to group 1 (green): {failovers}");
    assert!(failovers >= 1.0);
}

/// The upstream's JSON body of a reply.
fn answer(reply: &Reply) -> anyhow::Result<Answer> {
    serde_json::from_slice(&reply.body)
        .with_context(|| format!("not an upstream's answer: {}", reply.body_text()))
}
