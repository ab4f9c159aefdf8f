//! Issue 3, fail static: without a controller, or with one serving bad tables, every
//! Envoy keeps routing by its last good table, counts what went wrong, and passive
//! detection keeps failing over.

use anyhow::{Result, ensure};
use bytes::Bytes;
use detour_e2e::client::HttpClient;
use detour_e2e::envoy::Envoy;
use detour_e2e::fake_controller::{FakeController, Served};
use detour_e2e::load::{Load, LoadSpec, summaries};
use detour_e2e::setup::{ControllerKind, Setup};
use detour_e2e::table::table_for;
use detour_e2e::topology::{Topology, wait_served_by};
use detour_e2e::wait::{Probe, secs, wait_until};
use detour_filter::health::Health;
use detour_filter::metrics::version_gauge;
use detour_filter::table::DEFAULT_MAX_TABLE_BYTES;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(20);

/// Waits until `metric` of `envoy`'s `/stats/prometheus` is at least `at_least`.
fn wait_metric(envoy: &Envoy, metric: &str, at_least: f64) -> Result<()> {
    wait_until(
        &format!("{} reports {metric} >= {at_least}", envoy.name()),
        PATIENCE,
        || {
            let value = envoy.metric(metric)?;
            Ok(if value >= at_least {
                Probe::Ready(())
            } else {
                Probe::NotYet(format!("{metric} = {value}"))
            })
        },
    )
}

#[test]
fn with_the_controller_dead_traffic_flows_on_the_last_table_and_still_fails_over() {
    let mut t = Topology::start(
        "with_the_controller_dead_traffic_flows_on_the_last_table_and_still_fails_over",
        Setup::for_tests(),
    )
    .unwrap();
    let east = t.ingress("east").unwrap();
    let load = Load::start(&east, LoadSpec::steady_get("/", 4, 100)).unwrap();
    let held = t.envoy("east").unwrap().filter_table_version().unwrap();

    // The controller dies; the filter notices (its long-poll breaks) and keeps the table.
    t.controller().unwrap().kill().unwrap();
    let controller_died = Instant::now();
    wait_metric(
        t.envoy("east").unwrap(),
        "detour_fetch_error_unreachable",
        1.0,
    )
    .unwrap();
    load.wait_completed_after(Instant::now(), 50, PATIENCE)
        .unwrap();

    // East's foo dies too: only passive detection can notice now.
    let killed = t.kill_upstream("east").unwrap();
    load.wait_completed_after(Instant::now(), 150, PATIENCE)
        .unwrap();
    let report = load.stop().unwrap();
    let envoy = t.envoy("east").unwrap();
    eprintln!(
        "{} GETs {:?}; first answer from west {} after the kill ({} after the \
         controller died)",
        report.total(),
        report.by_cluster(),
        report
            .first_served_by("west", killed)
            .map(|s| secs(s.done() - killed))
            .unwrap_or_else(|| "never".into()),
        secs(controller_died.elapsed()),
    );

    // Not one request lost: east until its death, then west, all on the last table.
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "{} of {} failed: {:#?}",
        failures.len(),
        report.total(),
        summaries(failures.iter().copied())
    );
    let after: Vec<_> = report.sent_between(killed, Instant::now()).collect();
    assert!(after.iter().all(|s| s.served_by() == Some("west")));
    assert!(report.by_cluster().get("east").is_some_and(|n| *n > 0));
    assert_eq!(
        envoy.filter_table_version().unwrap(),
        held,
        "the table changed with no controller"
    );
    assert!(envoy.metric("detour_ejections").unwrap() >= 1.0);
    assert!(envoy.metric("detour_failover_apps_foo_group_1").unwrap() >= 1.0);
    // Nobody confirms the table any more: its age keeps growing (the gauge is
    // refreshed every second, in whole seconds).
    wait_until("the table age reaches 2 s", PATIENCE, || {
        let age = envoy.metric("detour_table_age_seconds")?;
        Ok(if age >= 2.0 {
            Probe::Ready(())
        } else {
            Probe::NotYet(format!("{age} s"))
        })
    })
    .unwrap();

    // The controller comes back: the filter fetches again (after its back-off), the
    // table is confirmed afresh, and it now says east is down.
    t.controller().unwrap().restart().unwrap();
    t.wait_target_health("east", Health::Unhealthy, PATIENCE)
        .unwrap();
    t.wait_filter_current("east").unwrap();
    let envoy = t.envoy("east").unwrap();
    assert_ne!(envoy.filter_table_version().unwrap(), held);
    wait_until("the table age drops after a fresh fetch", PATIENCE, || {
        let age = envoy.metric("detour_table_age_seconds")?;
        Ok(if age <= 1.0 {
            Probe::Ready(())
        } else {
            Probe::NotYet(format!("{age} s"))
        })
    })
    .unwrap();
}

/// The table a fake controller serves for east, version `version`, east's health as
/// given and every other target Healthy.
fn table(setup: &Setup, version: &str, east: Health) -> Result<Served> {
    let doc = table_for(setup, "east", version, |c| {
        if c == "east" { east } else { Health::Healthy }
    });
    Ok(Served {
        status: 200,
        etag: format!("\"{version}\""),
        body: Bytes::from(serde_json::to_vec(&doc)?),
    })
}

/// Serves `served` and waits until east's filter has refused it (the counter `metric`
/// moved); then serves the good table again and waits until the filter has confirmed
/// it (a 304 ends its back-off), so that the next bad table is fetched at once.
fn refused(
    fake: &FakeController,
    envoy: &Envoy,
    served: Served,
    metric: &str,
    good: &Served,
) -> Result<()> {
    let before = envoy.metric(metric)?;
    fake.serve(served);
    wait_metric(envoy, metric, before + 1.0)?;
    let requests = fake.requests();
    fake.serve(good.clone());
    // The fetch after the back-off (304), then the next long-poll.
    wait_until(
        "the filter long-polls the good table again",
        PATIENCE,
        || {
            Ok(if fake.requests() >= requests + 2 {
                Probe::Ready(())
            } else {
                Probe::NotYet(format!("{} requests", fake.requests()))
            })
        },
    )
}

/// Every request answered by `cluster`.
fn assert_answered_by(client: &HttpClient, cluster: &str, after: &str) -> Result<()> {
    for _ in 0..20 {
        let reply = client.get("/")?;
        ensure!(
            reply.served_by() == Some(cluster),
            "after {after}, wanted {cluster}: {}",
            reply.summary()
        );
    }
    Ok(())
}

#[test]
fn malformed_oversized_and_unknown_tables_leave_routing_unchanged() {
    let setup = Setup {
        controller: ControllerKind::External,
        ..Setup::for_tests()
    };
    let mut t = Topology::start_unconverged(
        "malformed_oversized_and_unknown_tables_leave_routing_unchanged",
        setup,
    )
    .unwrap();
    let setup = t.setup().clone();
    let fake = t.start_fake_controller().unwrap();
    let east = t.ingress("east").unwrap();

    // The last good table says east is down: traffic goes to west. (Were the filter to
    // drop it, traffic would go back to east, the route's own cluster.)
    let good = table(&setup, "1", Health::Unhealthy).unwrap();
    fake.serve(good.clone());
    t.wait_filter_holds("east", "1").unwrap();
    wait_served_by(&east, "west", PATIENCE).unwrap();
    let envoy = t.envoy("east").unwrap();

    // Not JSON.
    let garbage = Served {
        status: 200,
        etag: "\"2\"".into(),
        body: Bytes::from_static(b"{\"apiVersion\": \"detour.dev/table/v1\", \"schemes\": [{"),
    };
    refused(
        &fake,
        envoy,
        garbage,
        "detour_table_rejected_malformed",
        &good,
    )
    .unwrap();
    assert_answered_by(&east, "west", "a malformed table").unwrap();

    // A good table, except that it is larger than the filter accepts; it says east is
    // Healthy, so adopting it would move traffic back to east.
    let mut huge = table(&setup, "3", Health::Healthy).unwrap();
    let mut body = huge.body.to_vec();
    body.resize(DEFAULT_MAX_TABLE_BYTES + 1, b' ');
    huge.body = Bytes::from(body);
    refused(&fake, envoy, huge, "detour_table_rejected_too_large", &good).unwrap();
    assert_answered_by(&east, "west", "an oversized table").unwrap();

    // A table of a version this filter does not know, also saying east is Healthy.
    let mut doc = table_for(&setup, "east", "4", |_| Health::Healthy);
    doc.api_version = "detour.dev/table/v2".into();
    let unknown = Served {
        status: 200,
        etag: "\"4\"".into(),
        body: Bytes::from(serde_json::to_vec(&doc).unwrap()),
    };
    refused(
        &fake,
        envoy,
        unknown,
        "detour_table_rejected_unknown_version",
        &good,
    )
    .unwrap();
    assert_answered_by(&east, "west", "a table of an unknown version").unwrap();

    // Throughout, the filter held table 1, and said why it refused the others.
    assert_eq!(
        envoy.metric("detour_table_version").unwrap(),
        version_gauge("1") as f64
    );
    assert!(envoy.metric("detour_fetch_error_rejected").unwrap() >= 3.0);
    // One log line per refused table (a state change), however often it was fetched.
    let log = std::fs::read_to_string(t.out().file("envoy-east.log")).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("table refused"))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");

    // And it was listening all along: a good table saying east is Healthy moves
    // traffic back at once.
    fake.serve(table(&setup, "5", Health::Healthy).unwrap());
    t.wait_filter_holds("east", "5").unwrap();
    wait_served_by(&east, "east", PATIENCE).unwrap();
}

/// Issue 17, restarts: a restarted controller knows no verdict until its first round of
/// checks. It publishes no table before then, so east's Envoy, failed over to west
/// because east's foo fails its checks, keeps its table through the restart and sends
/// nothing back to that primary (with all-Unknown tables it would, until the checks
/// failed again). East's foo still answers everything but its checks, so that any
/// request sent back would be seen, and served, there rather than hidden by a retry;
/// its checks take a second to fail, so the new controller's first round lasts about two
/// (a check is asked twice) and the filter fetches in the middle of it.
#[test]
fn a_restarted_controller_sends_no_request_back_to_a_failed_primary() {
    let mut setup = Setup::for_tests();
    setup.health.interval = Duration::from_secs(2);
    setup.health.timeout = Duration::from_millis(1500);
    setup.health.unhealthy_threshold = 1;
    let mut t = Topology::start(
        "a_restarted_controller_sends_no_request_back_to_a_failed_primary",
        setup,
    )
    .unwrap();
    let east = t.ingress("east").unwrap();
    t.upstream("east")
        .unwrap()
        .fail_health_checks_after(Duration::from_secs(1))
        .unwrap();
    let detection = t.setup().detection_bound() + PATIENCE;
    t.wait_target_health("east", Health::Unhealthy, detection)
        .unwrap();
    t.wait_filter_current("east").unwrap();
    wait_served_by(&east, "west", PATIENCE).unwrap();
    let load = Load::start(&east, LoadSpec::steady_get("/", 4, 100)).unwrap();
    load.wait_completed_after(Instant::now(), 20, PATIENCE)
        .unwrap();
    let served_by_east = |t: &mut Topology| -> usize {
        let records = t.upstream("east").unwrap().records().unwrap();
        records.iter().filter(|r| r.path != "/healthz").count()
    };
    let before = served_by_east(&mut t);

    // Killed and started again at once: the filter's long-poll breaks, it fetches again
    // after its back-off, and meets the new controller while it is still checking.
    let restarted = Instant::now();
    t.controller().unwrap().kill().unwrap();
    t.controller().unwrap().restart().unwrap();
    let ready_after = restarted.elapsed();
    t.wait_filter_current("east").unwrap();
    // For as long as the new controller would take to call east Unhealthy again.
    load.wait_completed_after(Instant::now() + t.setup().detection_bound(), 50, PATIENCE)
        .unwrap();
    let report = load.stop().unwrap();
    let sent_back = served_by_east(&mut t) - before;
    eprintln!(
        "{} GETs {:?}; the restarted controller ready after {}; requests served by the \
         failed primary during the restart: {sent_back}",
        report.total(),
        report.by_cluster(),
        secs(ready_after),
    );
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "{} of {} failed: {:#?}",
        failures.len(),
        report.total(),
        summaries(failures.iter().copied())
    );
    assert_eq!(
        sent_back, 0,
        "east's Envoy sent {sent_back} requests back to its failed foo across the \
         controller's restart"
    );
    assert!(
        report
            .sent_between(restarted, Instant::now())
            .all(|s| s.served_by() == Some("west"))
    );
}
