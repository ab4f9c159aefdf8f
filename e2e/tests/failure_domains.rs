//! Issue 13, failure domains (DESIGN.md "Failure domains", "Zero loss"): an instance is
//! not a service and a gateway instance is not a cluster. One dead instance of east's
//! `foo`, one dead instance of west's gateway, one slow request, or a 5xx the service
//! chose to send (even with forged gateway marks) keeps the traffic where it is; only a
//! service with no instance left moves it. And a federation started all at once, or one
//! whose own gateway is down, keeps serving its own traffic from its own cluster.

use anyhow::{Result, ensure};
use detour_e2e::client::Request;
use detour_e2e::deliveries::Deliveries;
use detour_e2e::load::{Load, LoadReport, LoadSpec, Sample, summaries};
use detour_e2e::setup::{Replay, SCHEDULING_MARGIN, Setup, TABLE_PROPAGATION};
use detour_e2e::table::target_health;
use detour_e2e::topology::{Topology, gateway_envoy_name, wait_served_by};
use detour_filter::health::Health;
use std::time::{Duration, Instant};

/// Requests that must complete between two events of a test (a number rather than a
/// time, so a slow machine still sees enough of them).
const BETWEEN: usize = 40;
const PATIENCE: Duration = Duration::from_secs(30);

/// GETs and POSTs into east's ingress, 6 loops of one request per 50 ms.
fn get_and_post() -> LoadSpec {
    LoadSpec {
        workers: 6,
        pace: Some(Duration::from_millis(50)),
        mix: vec![Request::get("/"), Request::post("/", "an order")],
        max_duration: Duration::from_secs(120),
    }
}

/// What every test here demands of a load: no GET failed; no POST arrived twice; every
/// POST the client saw succeed arrived once, where it was answered; a POST that failed
/// says why. A POST may fail only where it may have been delivered: cut off by a kill
/// of the instance running it, or of the gateway carrying it (then it may have reached
/// no instance, but east's Envoy cannot know, so it must not send it again).
/// Returns the failed POSTs, for the test's output.
fn assert_nothing_lost<'r>(t: &Topology, report: &'r LoadReport) -> Result<Vec<&'r Sample>> {
    let deliveries = Deliveries::read(t)?;
    let failed_gets = report.failures_of("GET");
    ensure!(
        failed_gets.is_empty(),
        "{} of {} requests: GETs failed: {:#?}",
        failed_gets.len(),
        report.total(),
        summaries(failed_gets)
    );
    let twice = deliveries.more_than_once("POST");
    ensure!(twice.is_empty(), "POSTs delivered twice: {twice:?}");
    let mismatched = deliveries.mismatched(report, "POST");
    ensure!(mismatched.is_empty(), "{:#?}", summaries(mismatched));
    let failed_posts = report.failures_of("POST");
    for post in &failed_posts {
        ensure!(
            post.status() == Some(503) && post.reason().is_some(),
            "a POST failed without a reason: {} (arrived at {:?})",
            post.summary(),
            deliveries.of(&post.test_id)
        );
    }
    Ok(failed_posts)
}

/// Answers that came from another cluster than `cluster`.
fn served_elsewhere<'r>(
    samples: impl IntoIterator<Item = &'r Sample>,
    cluster: &str,
) -> Vec<&'r Sample> {
    samples
        .into_iter()
        .filter(|s| s.succeeded() && s.served_by() != Some(cluster))
        .collect()
}

/// Waits until `n` more requests of `load` have completed.
fn let_run(load: &Load, n: usize) -> Result<()> {
    load.wait_completed_after(Instant::now(), n, PATIENCE)
}

/// A stat of east's Envoy, 0 when Envoy has not created it.
fn east_stat(t: &mut Topology, name: &str) -> Result<u64> {
    Ok(t.envoy("east")?.stat(name)?.unwrap_or(0))
}

/// Envoy's outlier-detection counters of east's own `foo` cluster: ejections enforced
/// so far, and hosts ejected now.
fn east_outlier_ejections(t: &mut Topology) -> Result<(u64, u64)> {
    let cluster = t.setup().service.envoy_cluster("east");
    Ok((
        east_stat(
            t,
            &format!("cluster.{cluster}.outlier_detection.ejections_enforced_total"),
        )?,
        east_stat(
            t,
            &format!("cluster.{cluster}.outlier_detection.ejections_active"),
        )?,
    ))
}

#[test]
fn a_rolling_restart_of_east_stays_in_east_and_only_a_dead_service_moves_to_west() {
    let mut t = Topology::start(
        "a_rolling_restart_of_east_stays_in_east_and_only_a_dead_service_moves_to_west",
        Setup {
            instances: [("east".to_string(), 3)].into(),
            ..Setup::for_tests()
        },
    )
    .unwrap();
    let load = Load::start(&t.ingress("east").unwrap(), get_and_post()).unwrap();
    let_run(&load, BETWEEN).unwrap();
    // One instance at a time, killed and started again, the others up throughout.
    for i in 0..3 {
        t.kill_instance("east", i).unwrap();
        let_run(&load, BETWEEN).unwrap();
        t.restart_instance("east", i).unwrap();
        let_run(&load, BETWEEN).unwrap();
    }
    let rolled = Instant::now();
    let report = load.stop().unwrap();
    let failed_posts = assert_nothing_lost(&t, &report).unwrap();
    let elsewhere = served_elsewhere(&report.samples, "east");
    let retries_stat = format!(
        "cluster.{}.upstream_rq_retry",
        t.setup().service.envoy_cluster("east")
    );
    let retries = east_stat(&mut t, &retries_stat).unwrap();
    eprintln!(
        "rolling restart: {} requests, {:?}, {} POSTs cut off by a kill, {retries} retries \
         in east",
        report.total(),
        report.by_cluster(),
        failed_posts.len()
    );
    assert!(
        elsewhere.is_empty(),
        "answered by another cluster while east had live instances: {:#?}",
        summaries(elsewhere)
    );
    // The kills were felt: requests to a dead instance went on to another one.
    assert!(retries > 0, "no retry in east: the kills went unnoticed");
    assert_eq!(
        t.envoy("east").unwrap().metric("detour_ejections").unwrap(),
        0.0
    );

    // Now east's service has no instance left: west answers, and no GET fails.
    let load = Load::start(&t.ingress("east").unwrap(), get_and_post()).unwrap();
    let_run(&load, BETWEEN).unwrap();
    for i in 0..3 {
        t.kill_instance("east", i).unwrap();
    }
    let dead = Instant::now();
    let_run(&load, 3 * BETWEEN).unwrap();
    let report = load.stop().unwrap();
    let failed_posts = assert_nothing_lost(&t, &report).unwrap();
    let after: Vec<&Sample> = report.samples.iter().filter(|s| s.sent >= dead).collect();
    eprintln!(
        "all three killed: {} requests, {:?}, {} POSTs cut off by the kills; {:?} after \
         the rolling restart",
        report.total(),
        report.by_cluster(),
        failed_posts.len(),
        dead - rolled
    );
    let not_west = served_elsewhere(after.iter().copied(), "west");
    assert!(not_west.is_empty(), "{:#?}", summaries(not_west));
    assert!(after.iter().any(|s| s.succeeded()));
}

#[test]
fn a_dead_instance_of_wests_gateway_moves_nothing() {
    let mut t = Topology::start(
        "a_dead_instance_of_wests_gateway_moves_nothing",
        Setup {
            gateways: [("west".to_string(), 2)].into(),
            ..Setup::for_tests()
        },
    )
    .unwrap();
    // East's service gone: east's traffic crosses west's gateway, two instances of it.
    t.kill_upstream("east").unwrap();
    let east = t.ingress("east").unwrap();
    wait_served_by(&east, "west", t.setup().failover_bound()).unwrap();
    let load = Load::start(&east, get_and_post()).unwrap();
    let_run(&load, BETWEEN).unwrap();
    let killed = Instant::now();
    t.gateway_envoy("west", 1).unwrap().kill().unwrap();
    // Long enough for the controller's checks to have seen the dead instance.
    let until = killed + t.setup().failover_bound();
    let mut west_health = Vec::new();
    while Instant::now() < until {
        let table = t.controller().unwrap().table("east").unwrap();
        west_health.extend(
            target_health(&table, &t.setup().service.qualified())
                .into_iter()
                .filter(|(c, _)| c == "west")
                .map(|(_, h)| h),
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let_run(&load, BETWEEN).unwrap();
    let report = load.stop().unwrap();
    let failed_posts = assert_nothing_lost(&t, &report).unwrap();
    eprintln!(
        "{} requests, {:?}, {} POSTs cut off by the kill; west in east's table: {:?}",
        report.total(),
        report.by_cluster(),
        failed_posts.len(),
        west_health
    );
    let not_west = served_elsewhere(&report.samples, "west");
    assert!(not_west.is_empty(), "{:#?}", summaries(not_west));
    assert!(
        west_health.iter().all(|h| *h == Health::Healthy),
        "the controller judged west by one gateway instance: {west_health:?}"
    );
    let envoy = t.envoy("east").unwrap();
    assert_eq!(
        envoy
            .prometheus_value("detour_failover_apps_foo_group_2")
            .unwrap()
            .unwrap_or(0.0),
        0.0,
        "east's filter started requests at south"
    );
}

#[test]
fn a_frozen_instance_behind_wests_gateway_fails_no_get_and_no_check() {
    let mut t = Topology::start(
        "a_frozen_instance_behind_wests_gateway_fails_no_get_and_no_check",
        Setup {
            instances: [("west".to_string(), 2)].into(),
            replay: Replay {
                per_try_timeout: Some(Duration::from_millis(400)),
                ..Setup::for_tests().replay
            },
            ..Setup::for_tests()
        },
    )
    .unwrap();
    // East's service gone: east's traffic crosses west's gateway to west's two instances.
    t.kill_upstream("east").unwrap();
    let east = t.ingress("east").unwrap();
    wait_served_by(&east, "west", t.setup().failover_bound()).unwrap();
    let load = Load::start(&east, LoadSpec::steady_get("/", 4, 40)).unwrap();
    let_run(&load, BETWEEN).unwrap();
    // One of west's instances hangs: its socket accepts, nothing answers.
    let frozen = t.freeze_instance("west", 1).unwrap();
    let until = frozen + t.setup().failover_bound() * 2;
    let mut west_health = Vec::new();
    while Instant::now() < until {
        let table = t.controller().unwrap().table("east").unwrap();
        west_health.extend(
            target_health(&table, &t.setup().service.qualified())
                .into_iter()
                .filter(|(c, _)| c == "west")
                .map(|(_, h)| h),
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let report = load.stop().unwrap();
    t.thaw_instance("west", 1).unwrap();
    let slowest = report
        .samples
        .iter()
        .map(|s| s.latency)
        .max()
        .unwrap_or_default();
    eprintln!(
        "{} GETs, {:?}, slowest {slowest:?}; west in east's table: {west_health:?}",
        report.total(),
        report.by_cluster()
    );
    assert_nothing_lost(&t, &report).unwrap();
    // West's gateway asked the other instance: nothing went on to south.
    let not_west = served_elsewhere(&report.samples, "west");
    assert!(not_west.is_empty(), "{:#?}", summaries(not_west));
    assert!(
        west_health.iter().all(|h| *h == Health::Healthy),
        "the controller judged west by its frozen instance: {west_health:?}"
    );
}

#[test]
fn one_request_slower_than_the_route_timeout_moves_nothing() {
    let route_timeout = Duration::from_millis(1500);
    let mut t = Topology::start(
        "one_request_slower_than_the_route_timeout_moves_nothing",
        Setup {
            route_timeout: Some(route_timeout),
            ..Setup::for_tests()
        },
    )
    .unwrap();
    let east = t.ingress("east").unwrap();
    let load = Load::start(&east, LoadSpec::steady_get("/", 4, 40)).unwrap();
    let_run(&load, BETWEEN).unwrap();
    // A GET (replayable) and a POST, each held by east's foo beyond the route timeout.
    let slow = format!("/?delay_ms={}", (route_timeout * 2).as_millis());
    let get = east.send(Request::get(&slow)).unwrap();
    let post = east.send(Request::post(&slow, "a slow order")).unwrap();
    let_run(&load, 2 * BETWEEN).unwrap();
    let report = load.stop().unwrap();
    eprintln!(
        "slow GET: {}; slow POST: {}; load: {} GETs, {:?}",
        get.summary(),
        post.summary(),
        report.total(),
        report.by_cluster()
    );
    for reply in [&get, &post] {
        assert_eq!(reply.status, 504, "{}", reply.summary());
    }
    assert!(
        report.failures().is_empty(),
        "{:#?}",
        summaries(report.failures())
    );
    let elsewhere = served_elsewhere(&report.samples, "east");
    assert!(elsewhere.is_empty(), "{:#?}", summaries(elsewhere));
    let envoy = t.envoy("east").unwrap();
    assert_eq!(envoy.metric("detour_ejections").unwrap(), 0.0);
    assert_eq!(
        envoy
            .prometheus_value("detour_failover_apps_foo_group_1")
            .unwrap()
            .unwrap_or(0.0),
        0.0
    );
}

/// The same with `replay.perTryTimeout` set (as the soak runs), and the slow GET sent
/// after a quiet spell so that the filter watches it (it samples one request per worker
/// per 100 ms tick while all is quiet). Every attempt times out and the router answers
/// 504 itself: that is no later group's answer, and one watched request is never enough
/// to eject a cluster. The traffic that follows stays in east.
#[test]
fn a_watched_slow_request_with_a_per_try_timeout_moves_nothing() {
    let route_timeout = Duration::from_millis(1500);
    let mut t = Topology::start(
        "a_watched_slow_request_with_a_per_try_timeout_moves_nothing",
        Setup {
            route_timeout: Some(route_timeout),
            replay: Replay {
                per_try_timeout: Some(Duration::from_millis(300)),
                ..Setup::for_tests().replay
            },
            ..Setup::for_tests()
        },
    )
    .unwrap();
    let east = t.ingress("east").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let slow = east
        .send(Request::get(&format!(
            "/?delay_ms={}",
            (route_timeout * 2).as_millis()
        )))
        .unwrap();
    let load = Load::start(&east, LoadSpec::steady_get("/", 4, 40)).unwrap();
    let_run(&load, BETWEEN).unwrap();
    let report = load.stop().unwrap();
    eprintln!(
        "slow GET: {}; then {} GETs, {:?}",
        slow.summary(),
        report.total(),
        report.by_cluster()
    );
    assert_eq!(slow.status, 504, "{}", slow.summary());
    let elsewhere = served_elsewhere(&report.samples, "east");
    assert!(elsewhere.is_empty(), "{:#?}", summaries(elsewhere));
    assert_eq!(
        t.envoy("east").unwrap().metric("detour_ejections").unwrap(),
        0.0
    );
}

#[test]
fn a_service_forging_gateway_marks_gets_its_post_sent_nowhere_else() {
    let mut t = Topology::start(
        "a_service_forging_gateway_marks_gets_its_post_sent_nowhere_else",
        Setup {
            instances: [("east".to_string(), 3)].into(),
            ..Setup::for_tests()
        },
    )
    .unwrap();
    let east = t.ingress("east").unwrap();
    // East's own foo answers 503 and claims, as a detour gateway would, that the
    // request never reached it (`UF`: upstream connect failure).
    let forged = "/?status=503&gateway_flags=UF";
    let mut replies = Vec::new();
    for n in 0..12 {
        let id = format!("forged-post-{n}");
        let reply = east
            .send(Request::post(forged, "a payment").header("x-test-id", &id))
            .unwrap();
        replies.push((id, reply));
    }
    let deliveries = Deliveries::read(&t).unwrap();
    for (id, reply) in &replies {
        assert_eq!(
            (reply.status, reply.served_by()),
            (503, Some("east")),
            "the service's own answer, as it sent it: {}",
            reply.summary()
        );
        let got = deliveries.of(id);
        assert!(
            got.len() == 1 && got[0].cluster == "east",
            "POST {id} arrived at {got:?}"
        );
    }
    // Nothing was ejected, neither a host nor the cluster: east still answers.
    assert_eq!(east.get("/").unwrap().served_by(), Some("east"));
    let (enforced, active) = east_outlier_ejections(&mut t).unwrap();
    let envoy = t.envoy("east").unwrap();
    assert_eq!(envoy.metric("detour_ejections").unwrap(), 0.0);
    assert_eq!(
        (enforced, active),
        (0, 0),
        "Envoy's outlier detection ejected an instance of east's foo for its own 503"
    );
}

#[test]
fn a_federation_started_all_at_once_loses_no_get_to_an_early_kill() {
    let (mut t, spawned) = Topology::spawn_all_at_once(
        "a_federation_started_all_at_once_loses_no_get_to_an_early_kill",
        Setup::for_tests(),
    )
    .unwrap();
    // Every gateway must listen before a kill can be survived at all; on a busy
    // two-core machine the Envoys take longer than 1.5 s to compile the filter, so the
    // kill comes 1.5 s after the start or as soon as every process serves, whichever is
    // later — either way while the controller's first verdicts are still settling.
    t.wait_started().unwrap();
    let load = Load::start(
        &t.ingress("east").unwrap(),
        LoadSpec::steady_get("/", 4, 40),
    )
    .unwrap();
    // A few answers first: east's healthy service must serve east's traffic at start.
    let_run(&load, 10).unwrap();
    std::thread::sleep(
        (spawned + Duration::from_millis(1500)).saturating_duration_since(Instant::now()),
    );
    let killed = t.kill_upstream("east").unwrap();
    let_run(&load, 4 * BETWEEN).unwrap();
    let report = load.stop().unwrap();
    let before = report.samples.iter().filter(|s| s.sent < killed).count();
    eprintln!(
        "every process serving after {:?}, east's foo killed at {:?}: {} GETs ({before} \
         before the kill), {:?}",
        load_started_after(&report, spawned),
        killed - spawned,
        report.total(),
        report.by_cluster()
    );
    assert!(
        report.failures().is_empty(),
        "{:#?}",
        summaries(report.failures())
    );
    // Answered before the kill (one sent just before it may be answered by west).
    let early = served_elsewhere(report.samples.iter().filter(|s| s.done() < killed), "east");
    assert!(
        early.is_empty(),
        "east's healthy traffic left east: {:#?}",
        summaries(early)
    );
    // West is the next group, Healthy from its first check on: not held back by
    // failback damping as if it were recovering, so nothing goes to south.
    let late = served_elsewhere(report.samples.iter().filter(|s| s.sent >= killed), "west");
    assert!(late.is_empty(), "{:#?}", summaries(late));
}

fn load_started_after(report: &LoadReport, spawned: Instant) -> Duration {
    report.started.saturating_duration_since(spawned)
}

#[test]
fn east_traffic_stays_in_east_while_easts_gateway_is_down() {
    let mut t = Topology::start(
        "east_traffic_stays_in_east_while_easts_gateway_is_down",
        Setup {
            dedicated_gateways: ["east".to_string()].into(),
            ..Setup::for_tests()
        },
    )
    .unwrap();
    let load = Load::start(
        &t.ingress("east").unwrap(),
        LoadSpec::steady_get("/", 4, 40),
    )
    .unwrap();
    let_run(&load, BETWEEN).unwrap();
    t.envoy(&gateway_envoy_name("east", 0))
        .unwrap()
        .kill()
        .unwrap();
    // The controller's checks of east through east's gateway fail from now on; give
    // them every chance to move east's traffic, were they to.
    let until = Instant::now()
        + t.setup().detection_bound()
        + t.setup().stable_for
        + TABLE_PROPAGATION
        + SCHEDULING_MARGIN;
    let mut east_health = Vec::new();
    while Instant::now() < until {
        let table = t.controller().unwrap().table("east").unwrap();
        east_health.extend(
            target_health(&table, &t.setup().service.qualified())
                .into_iter()
                .filter(|(c, _)| c == "east")
                .map(|(_, h)| h),
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let report = load.stop().unwrap();
    eprintln!(
        "{} GETs, {:?}; east in east's table: {east_health:?}",
        report.total(),
        report.by_cluster()
    );
    assert!(
        report.failures().is_empty(),
        "{:#?}",
        summaries(report.failures())
    );
    let elsewhere = served_elsewhere(&report.samples, "east");
    assert!(elsewhere.is_empty(), "{:#?}", summaries(elsewhere));
    assert!(
        !east_health.contains(&Health::Unhealthy),
        "east's own table made east Unhealthy for its gateway: {east_health:?}"
    );
}
