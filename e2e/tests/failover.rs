//! Issue 2: through east's Envoy, `foo` is answered by the first healthy cluster of the
//! scheme east → [west] → [south], and by east again once it has been back for
//! `failback.stableFor`. Real Envoys, the real filter, the real controller, real
//! upstream processes killed with SIGKILL.

use anyhow::{Result, ensure};
use detour_e2e::client::HttpClient;
use detour_e2e::setup::{SCHEDULING_MARGIN, Setup};
use detour_e2e::topology::{Topology, watch_until_served_by};
use detour_e2e::wait::secs;
use detour_filter::health::Health;
use std::time::{Duration, Instant};

/// `n` GETs over about `over`, each of which `cluster` must answer: the switch holds
/// (no flapping back), not merely happened once.
fn assert_stays_on(client: &HttpClient, cluster: &str, n: u32, over: Duration) -> Result<()> {
    for i in 0..n {
        let reply = client.get("/")?;
        ensure!(
            reply.served_by() == Some(cluster),
            "request {i} of {n} should be answered by {cluster}: {}",
            reply.summary()
        );
        std::thread::sleep(over / n);
    }
    Ok(())
}

/// Kills `cluster`'s foo and checks both ways detour may notice: traffic through east
/// leaves it within the health-check bound (the filter's passive detection may make
/// that immediate), and the controller's checks call it Unhealthy within theirs.
fn kill_and_fail_over(t: &mut Topology, cluster: &str, next: &str) -> Result<()> {
    let east = t.ingress("east")?;
    let bound = t.setup().failover_bound();
    let killed = t.kill_upstream(cluster)?;
    let seen = watch_until_served_by(&east, next, bound)?;
    let took = killed.elapsed();
    eprintln!(
        "{cluster}'s foo killed: {next} answers after {}",
        secs(took)
    );
    ensure!(
        took <= bound,
        "{next} took {} (bound {})",
        secs(took),
        secs(bound)
    );
    let others: Vec<String> = seen
        .iter()
        .filter(|s| {
            s.reply
                .served_by()
                .is_some_and(|c| c != cluster && c != next)
        })
        .map(|s| s.reply.summary())
        .collect();
    ensure!(
        others.is_empty(),
        "skipped {next} for another cluster: {others:?}"
    );

    let detection = t.setup().detection_bound() + SCHEDULING_MARGIN;
    t.wait_target_health(
        cluster,
        Health::Unhealthy,
        detection.saturating_sub(killed.elapsed()),
    )?;
    eprintln!(
        "the controller calls {cluster} Unhealthy after {}",
        secs(killed.elapsed())
    );
    // And east's filter holds that verdict (tens of ms later): from here on, failback
    // damping is the controller's and the filter's to keep.
    t.wait_filter_current("east")?;
    Ok(())
}

#[test]
fn failover_follows_the_priority_order_within_the_health_check_bound() {
    let mut t = Topology::start(
        "failover_follows_the_priority_order_within_the_health_check_bound",
        Setup::for_tests(),
    )
    .unwrap();
    let east = t.ingress("east").unwrap();

    // Healthy: east's own foo answers, every time.
    assert_stays_on(&east, "east", 20, Duration::from_millis(500)).unwrap();

    // East's foo dies: the next group, west, takes over; then west's: south.
    kill_and_fail_over(&mut t, "east", "west").unwrap();
    assert_stays_on(&east, "west", 10, Duration::from_millis(500)).unwrap();
    kill_and_fail_over(&mut t, "west", "south").unwrap();
    assert_stays_on(&east, "south", 10, Duration::from_millis(500)).unwrap();
}

#[test]
fn traffic_returns_to_a_recovered_primary_only_after_stable_for() {
    let mut t = Topology::start(
        "traffic_returns_to_a_recovered_primary_only_after_stable_for",
        Setup::for_tests(),
    )
    .unwrap();
    let east = t.ingress("east").unwrap();
    let stable_for = t.setup().stable_for;
    kill_and_fail_over(&mut t, "east", "west").unwrap();

    let started: Instant = t.restart_upstream("east").unwrap();
    let seen = watch_until_served_by(&east, "east", t.setup().failback_bound()).unwrap();
    let first_east = seen.last().unwrap().sent;
    eprintln!(
        "east's foo started again: east answers after {} (stableFor {})",
        secs(first_east - started),
        secs(stable_for)
    );
    // Damping: east cannot pass a health check before it was started, so an east
    // answer sooner than stableFor after that is traffic returning too soon. (A request
    // is routed a moment after it is sent: 10 ms covers that.)
    assert!(
        first_east - started >= stable_for - Duration::from_millis(10),
        "east got traffic back {} after it was started, before stableFor {}",
        secs(first_east - started),
        secs(stable_for)
    );
    // Until then west, the healthy failover group, kept answering: no errors either.
    let before: Vec<String> = seen[..seen.len() - 1]
        .iter()
        .filter(|s| s.reply.served_by() != Some("west"))
        .map(|s| format!("{} at +{}", s.reply.summary(), secs(s.sent - started)))
        .collect();
    assert!(before.is_empty(), "while east was stabilising: {before:?}");
    assert!(
        seen.len() > 10,
        "too few requests ({}) to observe the damping window",
        seen.len()
    );
    assert_stays_on(&east, "east", 10, Duration::from_millis(500)).unwrap();
}
