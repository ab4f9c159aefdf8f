//! Issue 3, zero-loss failover: under steady concurrent load through east's Envoy,
//! killing east's `foo` (SIGKILL) loses no request that can safely be retried, and
//! delivers no request twice. Passive detection and replay do this at once; the
//! controller's health checks are far too slow to be the reason.

use anyhow::Result;
use detour_e2e::client::Request;
use detour_e2e::load::{Load, LoadReport, LoadSpec, Sample, summaries};
use detour_e2e::setup::Setup;
use detour_e2e::topology::Topology;
use detour_e2e::upstream::Record;
use detour_e2e::wait::secs;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Longest any request sent after the kill may take: a failed attempt is replayed at
/// once, so clients wait for one failed connect and one answer from west (plus the
/// upstream's own delay), never for a health check. Generous for a busy machine.
const PROMPT: Duration = Duration::from_millis(1500);
/// Requests that must complete before the kill (a warm, steady load) and after it.
const BEFORE: usize = 60;
const AFTER: usize = 150;
const PATIENCE: Duration = Duration::from_secs(20);

fn steady(mix: Vec<Request>) -> LoadSpec {
    LoadSpec {
        workers: 6,
        pace: Some(Duration::from_millis(50)),
        mix,
        max_duration: Duration::from_secs(60),
    }
}

/// Runs `spec` against east's ingress, SIGKILLs east's foo once the load is steady,
/// and stops after enough requests were sent after the kill. Returns the report, the
/// instant just before the signal, and the instant the kill was complete (the process
/// reaped: nothing sent later can have reached it).
fn kill_east_under(t: &mut Topology, spec: LoadSpec) -> Result<(LoadReport, Instant, Instant)> {
    let east = t.ingress("east")?;
    let load = Load::start(&east, spec)?;
    load.wait_completed_after(load.started(), BEFORE, PATIENCE)?;
    let killed = t.kill_upstream("east")?;
    let dead = Instant::now();
    load.wait_completed_after(dead, AFTER, PATIENCE)?;
    Ok((load.stop()?, killed, dead))
}

/// How quickly traffic moved, for the test's output.
fn timeline(report: &LoadReport, killed: Instant) -> String {
    let at = |s: Option<&Sample>, sent_or_done: fn(&Sample) -> Instant| {
        s.map(|s| {
            let t = sent_or_done(s);
            if t >= killed {
                format!("+{}", secs(t - killed))
            } else {
                format!("-{}", secs(killed - t))
            }
        })
        .unwrap_or_else(|| "never".into())
    };
    let last_east = report.last_served_by("east");
    let first_west = report.first_served_by("west", killed);
    let first_west_answer = report
        .samples
        .iter()
        .filter(|s| s.served_by() == Some("west"))
        .map(Sample::done)
        .min();
    format!(
        "last answer from east: sent {}, answered {}; first request sent after the kill \
         answered by west: sent {}, answered {}; first answer from west at {}",
        at(last_east, |s| s.sent),
        at(last_east, Sample::done),
        at(first_west, |s| s.sent),
        at(first_west, Sample::done),
        first_west_answer
            .map(|t| format!("+{}", secs(t.saturating_duration_since(killed))))
            .unwrap_or_else(|| "never".into()),
    )
}

#[test]
fn killing_the_primary_under_get_load_loses_no_request() {
    let mut t = Topology::start(
        "killing_the_primary_under_get_load_loses_no_request",
        Setup::for_tests(),
    )
    .unwrap();
    // Some GETs are held by the upstream, so that some are in flight at the kill: they
    // may have reached east's foo, and GET is in the scheme's `replay.methods`.
    let spec = steady(vec![Request::get("/"), Request::get("/?delay_ms=100")]);
    let (report, killed, dead) = kill_east_under(&mut t, spec).unwrap();
    eprintln!(
        "{} GETs, {:?}; {}",
        report.total(),
        report.by_cluster(),
        timeline(&report, killed)
    );

    // Every request answered 200 by some cluster's foo: none lost.
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "{} of {} GETs failed: {:#?}",
        failures.len(),
        report.total(),
        summaries(failures.iter().copied())
    );
    // Requests in flight at the kill were rescued: sent before it, answered by west.
    let rescued = report
        .samples
        .iter()
        .filter(|s| s.sent < killed && s.served_by() == Some("west"))
        .count();
    assert!(rescued > 0, "no request was in flight at the kill");
    // After the kill, west (the next group) answers, and promptly.
    let after: Vec<&Sample> = report.samples.iter().filter(|s| s.sent >= dead).collect();
    let elsewhere: Vec<&Sample> = after
        .iter()
        .copied()
        .filter(|s| s.served_by() != Some("west"))
        .collect();
    assert!(elsewhere.is_empty(), "{:#?}", summaries(elsewhere));
    let slow: Vec<&Sample> = after
        .iter()
        .copied()
        .filter(|s| s.latency > PROMPT)
        .collect();
    assert!(
        slow.is_empty(),
        "slower than {PROMPT:?}: {:#?}",
        summaries(slow)
    );

    // Envoy's router carried the rescued requests on (retries), and the filter, having
    // seen east fail, started later requests at west; as Prometheus scrapes it.
    let service = t.setup().service.envoy_cluster("east");
    let envoy = t.envoy("east").unwrap();
    let metric = |name: &str| envoy.metric(name).unwrap();
    let retries = envoy
        .stat(&format!("cluster.{service}.upstream_rq_retry"))
        .unwrap()
        .unwrap_or(0);
    eprintln!(
        "east's Envoy: retries {retries}; ejections {}; failed over to group 1: {}",
        metric("detour_ejections"),
        metric("detour_failover_apps_foo_group_1"),
    );
    assert!(
        retries >= rescued as u64,
        "{retries} retries, {rescued} rescued"
    );
    assert!(metric("detour_ejections") >= 1.0);
    assert!(metric("detour_failover_apps_foo_group_1") >= 1.0);
}

#[test]
fn posts_are_never_delivered_twice_and_those_cut_off_by_the_kill_say_why() {
    let mut t = Topology::start(
        "posts_are_never_delivered_twice_and_those_cut_off_by_the_kill_say_why",
        Setup::for_tests(),
    )
    .unwrap();
    // POST is not in `replay.methods`: one the upstream holds when it is killed may
    // have been delivered, and must not be sent again.
    let spec = steady(vec![
        Request::post("/?delay_ms=150", "a payment"),
        Request::get("/"),
    ]);
    let (report, killed, dead) = kill_east_under(&mut t, spec).unwrap();

    // What every upstream received, by test id (across the kill: records survive it).
    let mut received: BTreeMap<String, Vec<(String, Record)>> = BTreeMap::new();
    for cluster in ["east", "west", "south"] {
        for record in t.upstream(cluster).unwrap().records().unwrap() {
            if let Some(id) = record.test_id.clone() {
                received
                    .entry(id)
                    .or_default()
                    .push((cluster.to_string(), record));
            }
        }
    }
    let posts: Vec<&Sample> = report
        .samples
        .iter()
        .filter(|s| s.method == "POST")
        .collect();
    let failed: Vec<&Sample> = posts.iter().copied().filter(|s| !s.succeeded()).collect();
    eprintln!(
        "{} requests ({} POSTs), {:?}; {} POSTs failed; {}",
        report.total(),
        posts.len(),
        report.by_cluster(),
        failed.len(),
        timeline(&report, killed)
    );

    // No POST was delivered twice, anywhere.
    let twice: Vec<(&String, Vec<&String>)> = received
        .iter()
        .filter(|(_, got)| got.len() > 1 && got[0].1.method == "POST")
        .map(|(id, got)| (id, got.iter().map(|(c, _)| c).collect()))
        .collect();
    assert!(twice.is_empty(), "POSTs delivered twice: {twice:?}");
    // Every POST the client saw succeed was delivered exactly once, to the cluster
    // that answered it.
    for post in posts.iter().filter(|s| s.succeeded()) {
        let got: Vec<&String> = received
            .get(&post.test_id)
            .map(|g| g.iter().map(|(c, _)| c).collect())
            .unwrap_or_default();
        assert_eq!(got, [post.served_by().unwrap_or("?")], "{}", post.summary());
    }
    // POSTs sent after the kill: answered by west, the next group.
    let late: Vec<&Sample> = posts
        .iter()
        .copied()
        .filter(|s| s.sent >= dead && s.served_by() != Some("west"))
        .collect();
    assert!(late.is_empty(), "{:#?}", summaries(late));
    // The kill genuinely cut POSTs off: east's foo had received them and never answered.
    let cut_off: Vec<&Sample> = posts
        .iter()
        .copied()
        .filter(|s| {
            s.done() > killed
                && received
                    .get(&s.test_id)
                    .is_some_and(|got| got.iter().any(|(c, _)| c == "east"))
                && s.served_by() != Some("east")
        })
        .collect();
    assert!(!cut_off.is_empty(), "no POST was in flight at the kill");
    // Each of those failed, and said why: replaying it could deliver it twice.
    for post in &cut_off {
        assert!(
            post.status() == Some(503) && post.reason().is_some(),
            "a POST cut off by the kill: {}",
            post.summary()
        );
    }
    // Only POSTs the kill cut off failed. Besides those east recorded, that includes
    // POSTs already written to a connection of the dying process when it died (in its
    // socket, unread, unrecorded): Envoy sees the connection reset under the request,
    // exactly as when the service had started on it, so it may not send it again. Such
    // a POST was sent before the kill was over and failed on a reset (`UC`/`UR`), never
    // on a failure that proves it reached nothing (`UF`, `UH`: those go on to west).
    let cut_off_ids: Vec<&String> = cut_off.iter().map(|s| &s.test_id).collect();
    let others: Vec<String> = failed
        .iter()
        .filter(|s| !cut_off_ids.contains(&&s.test_id))
        .filter(|s| {
            let reset = s
                .reason()
                .is_some_and(|r| r.split(',').any(|f| f.trim() == "UC" || f.trim() == "UR"));
            !(s.sent < dead && reset)
        })
        .map(|s| s.summary())
        .collect();
    assert!(
        others.is_empty(),
        "POSTs that failed without having been cut off by the kill: {others:#?}"
    );
    let get_failures: Vec<&Sample> = report
        .failures()
        .into_iter()
        .filter(|s| s.method == "GET")
        .collect();
    assert!(get_failures.is_empty(), "{:#?}", summaries(get_failures));

    let envoy = t.envoy("east").unwrap();
    eprintln!(
        "cut off by the kill: {} POSTs, e.g. {:?}",
        cut_off.len(),
        cut_off[0].reason()
    );
    // East's failure was seen: later requests went straight to west.
    assert!(envoy.metric("detour_ejections").unwrap() >= 1.0);
    assert!(envoy.metric("detour_failover_apps_foo_group_1").unwrap() >= 1.0);
}
