//! Issue 3, faster propagation: the filter long-polls its table, so a change the
//! controller publishes reaches every Envoy, and every worker VM in it, well under a
//! second later (measured from the moment the controller's own long-poll answers
//! with the new version, as a client of the table API sees it).

use detour_e2e::documents::failover_scheme_named;
use detour_e2e::envoy_log::{self, CONFIGURED, adopted};
use detour_e2e::setup::Setup;
use detour_e2e::topology::Topology;
use detour_e2e::wait::{Probe, wait_until};
use detour_filter::health::Health;
use detour_filter::metrics::version_gauge;
use detour_filter::table::wire::TableDoc;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

/// "Well under a second", with slack for a busy two-core machine: the fetching VM adopts
/// a table as soon as its long-poll answers, the others on their next 100 ms tick.
const BOUND: Duration = Duration::from_millis(500);
const CLUSTERS: [&str; 3] = ["east", "west", "south"];
const PATIENCE: Duration = Duration::from_secs(20);

/// When the harness's long-poll of one cluster's table answered, and with what.
struct Published {
    at: Instant,
    wall: SystemTime,
    table: TableDoc,
}

#[test]
fn a_health_change_reaches_every_worker_of_every_envoy_well_under_a_second() {
    let mut t = Topology::start(
        "a_health_change_reaches_every_worker_of_every_envoy_well_under_a_second",
        Setup::for_tests(),
    )
    .unwrap();
    // Give west and south a scheme of their own (hot reload), so that every cluster's
    // table names west's foo and all three change together when west's health does.
    for (primary, next) in [("west", "south"), ("south", "west")] {
        let setup = Setup {
            primary: primary.into(),
            failover_groups: vec![vec![next.into()]],
            ..t.setup().clone()
        };
        let file = t
            .config_dir()
            .join(format!("scheme-apps-foo-{primary}.yaml"));
        std::fs::write(
            &file,
            failover_scheme_named(&setup, &format!("foo-{primary}")),
        )
        .unwrap();
    }
    let controller = t.controller().unwrap();
    wait_until("every table has a Healthy scheme", PATIENCE, || {
        for cluster in CLUSTERS {
            let table = controller.table(cluster)?;
            let healthy = table
                .schemes
                .iter()
                .flat_map(|s| s.groups.iter().flatten())
                .all(|target| target.health == Health::Healthy);
            if table.schemes.is_empty() || !healthy {
                return Ok(Probe::NotYet(format!("{cluster}: {table:?}")));
            }
        }
        Ok(Probe::Ready(()))
    })
    .unwrap();
    for cluster in CLUSTERS {
        t.wait_filter_current(cluster).unwrap();
    }
    let controller = t.controller().unwrap();
    let held: BTreeMap<&str, String> = CLUSTERS
        .iter()
        .map(|c| (*c, controller.table(c).unwrap().version))
        .collect();

    // The harness long-polls every table as the filters do. (They are in place long
    // before the change: the controller needs two failed checks to call west down.)
    let polls: Vec<_> = CLUSTERS
        .iter()
        .map(|&cluster| {
            let client = controller.table_client(cluster).unwrap();
            let version = held[cluster].clone();
            std::thread::spawn(move || {
                let request =
                    detour_e2e::client::Request::get(&format!("/v1/tables/{cluster}?wait=20s"))
                        .header("if-none-match", &format!("\"{version}\""));
                let reply = client
                    .with_timeout(Duration::from_secs(25))
                    .send(request)
                    .unwrap();
                let (at, wall) = (Instant::now(), SystemTime::now());
                assert_eq!(reply.status, 200, "{cluster}: {}", reply.summary());
                let table: TableDoc = serde_json::from_slice(&reply.body).unwrap();
                Published { at, wall, table }
            })
        })
        .collect();

    // West's health checks start failing while west keeps serving: a change only the
    // controller can see, so only its table can tell the filters.
    t.upstream("west")
        .unwrap()
        .fail_health_checks(true)
        .unwrap();

    // Watch every Envoy's table-version gauge until the long-polls have answered and
    // each gauge shows its new table.
    let mut gauges: BTreeMap<&str, Vec<(Instant, Option<u64>)>> = BTreeMap::new();
    let deadline = Instant::now() + PATIENCE;
    while polls.iter().any(|p| !p.is_finished())
        || CLUSTERS.iter().any(|c| {
            gauges[c]
                .last()
                .is_none_or(|(_, g)| *g == Some(version_gauge(&held[c])))
        })
    {
        assert!(Instant::now() < deadline, "no change within {PATIENCE:?}");
        for cluster in CLUSTERS {
            let gauge = t.envoy(cluster).unwrap().filter_table_version().unwrap();
            gauges
                .entry(cluster)
                .or_default()
                .push((Instant::now(), gauge));
        }
    }
    let published: Vec<Published> = polls.into_iter().map(|p| p.join().unwrap()).collect();

    for (cluster, published) in CLUSTERS.iter().zip(&published) {
        let new = &published.table.version;
        assert_ne!(new, &held[cluster]);
        let west = published
            .table
            .schemes
            .iter()
            .flat_map(|s| s.groups.iter().flatten())
            .filter(|target| target.cluster == "west")
            .map(|target| target.health)
            .collect::<Vec<_>>();
        assert!(
            west.contains(&Health::Unhealthy),
            "{cluster}'s new table does not say west is down: {west:?}"
        );
        // The gauge: the first time it showed the new table.
        let shown = gauges[cluster]
            .iter()
            .find(|(_, g)| *g == Some(version_gauge(new)))
            .map(|(at, _)| at.saturating_duration_since(published.at))
            .unwrap_or_else(|| panic!("{cluster}'s gauge never showed {new}"));
        // Every VM of this Envoy (main thread and workers, by their log lines): when it
        // started routing by the new table. (Waited for: a test that stops watching
        // too early must not take a late VM for one that never adopted it.)
        let log = t.out().file(&format!("envoy-{cluster}.log"));
        let vms = wait_until("every VM logged the new table", PATIENCE, || {
            let lines = envoy_log::read(&log)?;
            let mut vms: BTreeMap<u64, Option<Duration>> = lines
                .iter()
                .filter(|l| l.text.contains(CONFIGURED))
                .map(|l| (l.thread, None))
                .collect();
            for line in lines.iter().filter(|l| l.text.ends_with(&adopted(new))) {
                let after = line
                    .at
                    .duration_since(published.wall)
                    .unwrap_or(Duration::ZERO);
                vms.entry(line.thread).or_insert(None).get_or_insert(after);
            }
            Ok(if vms.values().all(Option::is_some) {
                Probe::Ready(vms)
            } else {
                Probe::NotYet(format!("{vms:?}"))
            })
        })
        .unwrap();
        eprintln!(
            "{cluster}: gauge shows the new table {} ms after the controller published it; \
             VMs (by thread) adopted it after {:?}",
            shown.as_millis(),
            vms.values()
                .map(|a| a.map(|a| a.as_millis()))
                .collect::<Vec<_>>()
        );
        assert!(
            shown <= BOUND,
            "{cluster}'s gauge took {shown:?} (bound {BOUND:?})"
        );
        assert!(
            vms.len() >= 2,
            "{cluster}: fewer VMs than workers in the log: {vms:?}"
        );
        for (thread, took) in &vms {
            let took = took.unwrap_or_default();
            assert!(
                took <= BOUND,
                "{cluster}: the VM on thread {thread} took {took:?} (bound {BOUND:?})"
            );
        }
    }
}
