use super::*;
use crate::docs::load::parse_file;
use crate::health::state::TargetState;
use crate::report::{ConfigOutcome, ServiceCounts, parse_rfc3339};
use crate::testing::EXAMPLE;
use crate::validate::build_model;
use std::time::{Duration, Instant};

fn model_of(text: &str) -> Arc<Model> {
    let (docs, problems) = parse_file("t.yaml", text);
    assert!(problems.is_empty(), "{problems:?}");
    Arc::new(build_model(&docs).unwrap())
}

/// The example (east → [west] → [south]) with every target checked Healthy.
struct World {
    model: Arc<Model>,
    board: HealthMap,
    tracker: Tracker,
    config: Option<ConfigState>,
    catalogue: Option<Catalogue>,
    tables: TableSet,
    t0: Instant,
}

impl World {
    fn new() -> World {
        let model = model_of(EXAMPLE);
        let mut w = World {
            model,
            board: HealthMap::new(),
            tracker: Tracker::new("files", EventLog::default()),
            config: None,
            catalogue: None,
            tables: TableSet::default(),
            t0: Instant::now(),
        };
        for c in ["east", "west", "south"] {
            w.check(c, true, w.t0, "HTTP 200 in 1ms");
        }
        w
    }

    /// Enough results for `cluster`'s target to reach a verdict.
    fn check(&mut self, cluster: &str, passed: bool, at: Instant, saw: &str) {
        let scheme = &self.model.schemes[0];
        let target = scheme.targets().find(|t| t.cluster == cluster).unwrap();
        let spec = self.model.probe_spec(scheme, target).unwrap();
        let p = spec.check.clone();
        let wall = self.wall(at);
        let state = self
            .board
            .entry(spec)
            .or_insert_with(|| TargetState::new(at));
        for _ in 0..p.unhealthy_threshold.max(p.healthy_threshold) {
            if state.observe(passed, &p, at).is_some() {
                // The board reads the real clock; this test's clock is `wall`.
                state.since_wall = wall;
            }
        }
        state.last = Some(saw.to_string());
    }

    /// The wall-clock time of `at`.
    fn wall(&self, at: Instant) -> SystemTime {
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(1_000_000)
            + at.saturating_duration_since(self.t0)
    }

    fn observe(&mut self, at: Instant) -> StatusReport {
        let wall = self.wall(at);
        let decided = Decided::new(self.model.clone(), Arc::new(self.board.clone()), at, wall);
        self.tracker.observe(&Inputs {
            decided: &decided,
            tables: &self.tables,
            config: self.config.as_ref(),
            ready: true,
            catalogue: self.catalogue.as_ref(),
        })
    }
}

/// A second scheme, with west as its primary.
const BAR: &str = "apiVersion: detour.dev/v1alpha1
kind: FailoverScheme
metadata: {name: bar, namespace: apps}
spec:
  primary: {cluster: west, name: foo, namespace: apps}
  failoverGroups:
  - priorityGroup:
    - {cluster: east, services: [{name: foo, namespace: apps}]}
";

fn kinds(report: &StatusReport) -> Vec<EventKind> {
    report.events.iter().map(|e| e.kind).collect()
}

#[test]
fn the_report_shows_clusters_schemes_groups_and_health() {
    let mut w = World::new();
    let r = w.observe(w.t0);
    assert_eq!(r.api_version, STATUS_API_VERSION);
    assert_eq!(r.controller.source, "files");
    let names: Vec<&str> = r.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["east", "south", "west"]);
    assert_eq!(r.clusters[0].gateway, "127.0.1.1:15443");
    assert_eq!((r.clusters[0].services, r.clusters[0].primaries), (1, 1));
    let s = &r.schemes[0];
    assert_eq!(s.name, "apps/foo");
    assert_eq!(
        s.primary,
        TargetId {
            cluster: "east".into(),
            service: "apps/foo".into()
        }
    );
    assert_eq!((s.active_group, s.reason.as_str()), (0, "primary-healthy"));
    assert_eq!(s.message, "the primary takes the traffic");
    assert_eq!(s.stable_for_ms, 10_000);
    let groups: Vec<Vec<&str>> = s
        .groups
        .iter()
        .map(|g| g.iter().map(|t| t.cluster.as_str()).collect())
        .collect();
    assert_eq!(groups, [["east"], ["west"], ["south"]]);
    let east = &s.groups[0][0];
    assert_eq!((east.health, east.basis), (Health::Healthy, Basis::Checked));
    assert_eq!(east.last_check, None, "only shown while not Healthy");
    assert_eq!(r.summary.failed_over, 0);
    assert_eq!(r.summary.targets.healthy, 3);
    assert!(r.events.is_empty(), "start-up is not news");
}

#[test]
fn a_failover_and_the_damped_failback_are_logged_with_their_reasons() {
    let mut w = World::new();
    w.observe(w.t0);

    let t1 = w.t0 + Duration::from_secs(5);
    w.check("east", false, t1, "cannot connect: Connection refused");
    let r = w.observe(t1);
    assert_eq!(
        kinds(&r),
        [EventKind::FailedOver, EventKind::HealthChanged],
        "newest first: the cause, then the move"
    );
    let health = &r.events[1];
    assert_eq!(
        health.message,
        "apps/foo in east: Healthy → Unhealthy (last check: cannot connect: Connection refused)"
    );
    assert_eq!(
        (health.from, health.to),
        (Some(Health::Healthy), Some(Health::Unhealthy))
    );
    let moved = &r.events[0];
    assert_eq!(moved.scheme.as_deref(), Some("apps/foo"));
    assert_eq!((moved.from_group, moved.to_group), (Some(0), Some(1)));
    assert_eq!(
        moved.message,
        "traffic for apps/foo moves from the primary (apps/foo in east: Unhealthy) to \
         failover group 1 (apps/foo in west: Healthy)"
    );
    let s = &r.schemes[0];
    assert_eq!((s.active_group, s.reason.as_str()), (1, "failed-over"));
    assert_eq!(s.active_since, moved.at);
    let east = &s.groups[0][0];
    assert_eq!(east.health, Health::Unhealthy);
    assert_eq!(
        east.last_check.as_deref(),
        Some("cannot connect: Connection refused")
    );
    assert_eq!(r.summary.failed_over, 1);
    assert_eq!(r.summary.targets.unhealthy, 1);

    // Back: Healthy by the checks, still Unhealthy for the scheme for stableFor.
    let t2 = t1 + Duration::from_secs(3);
    w.check("east", true, t2, "HTTP 200 in 1ms");
    let r = w.observe(t2);
    assert_eq!(r.events[0].kind, EventKind::HealthChanged);
    assert_eq!(r.schemes[0].active_group, 1);
    let east = &r.schemes[0].groups[0][0];
    assert_eq!(
        (east.health, east.basis),
        (Health::Unhealthy, Basis::Recovering)
    );
    let state = w.board.values().find(|s| s.recovered).unwrap();
    assert_eq!(
        east.recovering_until.as_deref().and_then(parse_rfc3339),
        parse_rfc3339(&rfc3339_ms(state.since_wall + Duration::from_secs(10)))
    );

    let t3 = t2 + Duration::from_secs(10);
    let r = w.observe(t3);
    assert_eq!(r.events[0].kind, EventKind::FailedBack);
    assert_eq!(
        (r.events[0].from_group, r.events[0].to_group),
        (Some(1), Some(0))
    );
    assert_eq!(r.schemes[0].active_group, 0);
    assert_eq!(r.schemes[0].groups[0][0].health, Health::Healthy);
    assert_eq!(r.events.len(), 4);
}

#[test]
fn a_failover_target_checked_before_the_primary_moves_nothing() {
    let mut w = World::new();
    w.board.clear();
    w.observe(w.t0);
    // West's first verdict lands before east's: the table keeps traffic on the primary
    // until the primary has its own verdict, so the active group stays 0.
    w.check("west", true, w.t0, "HTTP 200 in 1ms");
    let r = w.observe(w.t0);
    assert_eq!(r.schemes[0].active_group, 0);
    w.check("east", true, w.t0, "HTTP 200 in 1ms");
    w.check("south", true, w.t0, "HTTP 200 in 1ms");
    let r = w.observe(w.t0);
    assert_eq!(r.schemes[0].active_group, 0);
    assert!(r.events.is_empty(), "{:?}", r.events);
    // From now on a move is news.
    let t1 = w.t0 + Duration::from_secs(1);
    w.check("east", false, t1, "HTTP 503");
    let r = w.observe(t1);
    assert_eq!(r.events[0].kind, EventKind::FailedOver);
}

#[test]
fn since_stays_while_the_health_does() {
    let mut w = World::new();
    let first = w.observe(w.t0);
    let later = w.observe(w.t0 + Duration::from_secs(30));
    assert_eq!(
        first.schemes, later.schemes,
        "nothing changed, nothing moves"
    );
    let t1 = w.t0 + Duration::from_secs(40);
    w.check("west", false, t1, "HTTP 503");
    let r = w.observe(t1);
    let west = &r.schemes[0].groups[1][0];
    assert_eq!(west.since, rfc3339_ms(w.wall(t1)), "the checks' verdict");
    assert_eq!(
        r.schemes[0].groups[0][0].since,
        first.schemes[0].groups[0][0].since
    );
    assert_eq!(
        r.schemes[0].active_since, first.schemes[0].active_since,
        "a failover target's health does not move the traffic"
    );
}

#[test]
fn refused_and_applied_configurations_are_logged() {
    let mut w = World::new();
    w.config = Some(ConfigState {
        outcome: ConfigOutcome::Applied,
        at: "t0".into(),
        message: None,
    });
    w.observe(w.t0);
    let problem = "config/x.yaml: document 1 (FailoverScheme apps/x): \
        spec.primary.cluster: unknown cluster \"<img src=x onerror=alert(1)>\"";
    w.config = Some(ConfigState {
        outcome: ConfigOutcome::Refused,
        at: "t1".into(),
        message: Some(problem.into()),
    });
    let r = w.observe(w.t0);
    assert_eq!(kinds(&r), [EventKind::ConfigRefused]);
    assert!(
        r.events[0].message.ends_with(problem),
        "{}",
        r.events[0].message
    );
    assert_eq!(
        r.controller.config.as_ref().unwrap().message.as_deref(),
        Some(problem)
    );

    // The bad file is fixed back: the same model, valid again.
    w.config = Some(ConfigState {
        outcome: ConfigOutcome::Applied,
        at: "t2".into(),
        message: None,
    });
    let r = w.observe(w.t0);
    assert_eq!(r.events[0].kind, EventKind::ConfigApplied);
    assert!(r.events[0].message.contains("valid again"));

    // A new scheme: what changed is said.
    w.model = model_of(&format!("{EXAMPLE}\n---\n{BAR}"));
    w.config = Some(ConfigState {
        outcome: ConfigOutcome::Applied,
        at: "t3".into(),
        message: None,
    });
    let r = w.observe(w.t0);
    assert_eq!(r.events[0].kind, EventKind::ConfigApplied);
    assert_eq!(
        r.events[0].message,
        "configuration applied: schemes added: apps/bar (read at t3)"
    );
    assert_eq!(r.schemes.len(), 2);
}

#[test]
fn model_changes_name_what_changed_and_cut_long_lists() {
    let one = model_of(EXAMPLE);
    let mut many = (*one).clone();
    for i in 0..8 {
        let mut s = many.schemes[0].clone();
        s.name = format!("s{i}");
        many.schemes.push(s);
    }
    assert_eq!(
        model_changes(&one, &many),
        ["schemes added: apps/s0, apps/s1, apps/s2, apps/s3, apps/s4 and 3 more"]
    );
    let mut moved = (*one).clone();
    if let Some(west) = moved.clusters.get_mut("west") {
        west.gateway = crate::model::Address::parse("10.0.0.2:15443").unwrap();
    }
    moved.schemes[0].failback.stable_for = Duration::from_secs(1);
    assert_eq!(
        model_changes(&one, &moved),
        [
            "schemes changed: apps/foo",
            "gateways changed: west (10.0.0.2:15443)"
        ]
    );
    assert!(model_changes(&one, &one).is_empty());
}

/// One discovered service of a member cluster, as the Kubernetes source lists it.
fn known(namespace: &str, name: &str, port: u16) -> crate::model::KnownService {
    crate::model::KnownService {
        name: ServiceName::new(namespace, name),
        port,
        protocol: Protocol::Http,
    }
}

#[test]
fn every_service_of_every_cluster_is_listed_with_what_protects_it() {
    let mut w = World::new();
    w.model = model_of(&format!("{EXAMPLE}---\n{BAR}"));
    // Kubernetes: the model holds only what schemes name; the catalogue has the rest,
    // and a cluster that is no valid member cluster lists nothing.
    w.catalogue = Some(Catalogue::from([
        (
            "east".to_string(),
            vec![known("apps", "foo", 8080), known("web", "shop", 80)],
        ),
        ("gone".to_string(), vec![known("apps", "ghost", 80)]),
    ]));
    let r = w.observe(w.t0);
    // `cluster service: scheme role group, ...`
    let listed: Vec<String> = r
        .services
        .iter()
        .map(|s| {
            let by: Vec<String> = s
                .protection
                .iter()
                .map(|p| format!("{} {:?} {}", p.scheme, p.role, p.group))
                .collect();
            format!("{} {}: {}", s.cluster, s.service, by.join(", "))
        })
        .collect();
    assert_eq!(
        listed,
        [
            "east apps/foo: apps/bar Target 1, apps/foo Primary 0",
            "east web/shop: ",
            "south apps/foo: apps/foo Target 2",
            "west apps/foo: apps/bar Primary 0, apps/foo Target 1",
        ]
    );
    let shop = &r.services[1];
    assert_eq!((shop.port, shop.protocol.as_str()), (80, "http"));
    assert!(!shop.is_protected());
    assert_eq!(
        r.summary.services,
        ServiceCounts {
            protected: 3,
            unprotected: 1
        }
    );
    // What `detour status` reads back is what was written.
    let json = serde_json::to_string(&r).unwrap();
    assert!(
        json.contains(r#""protection":[{"scheme":"apps/bar","role":"Target","group":1}"#),
        "{json}"
    );
    let back: StatusReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
}

#[test]
fn a_table_near_or_over_the_filters_limit_is_in_the_report_and_logged_once() {
    use crate::tables::TableSize;
    let mut w = World::new();
    let size = |bytes| TableSize { bytes, max: 1000 };
    w.tables.sizes.insert("east".into(), size(700));
    let r = w.observe(w.t0);
    let east = &r.clusters[0];
    assert_eq!(
        (east.table_bytes, east.table_max_bytes),
        (Some(700), Some(1000))
    );
    assert_eq!(east.table_warning, None, "70% is no news");
    assert!(r.events.is_empty());

    w.tables.sizes.insert("east".into(), size(850));
    let r = w.observe(w.t0);
    assert_eq!(kinds(&r), [EventKind::TableNearLimit]);
    assert_eq!(r.events[0].cluster.as_deref(), Some("east"));
    let warning = r.clusters[0].table_warning.as_deref().unwrap();
    assert!(
        warning.contains("850 bytes, 85% of the filters' maxTableBytes (1000)"),
        "{warning}"
    );
    // Growing within the same band is not news again.
    w.tables.sizes.insert("east".into(), size(900));
    assert_eq!(w.observe(w.t0).events.len(), 1);

    w.tables.sizes.insert("east".into(), size(1001));
    let r = w.observe(w.t0);
    assert_eq!(
        kinds(&r),
        [EventKind::TableRefused, EventKind::TableNearLimit]
    );
    assert!(
        r.events[0]
            .message
            .contains("not served and the last good table stays")
    );
    assert!(
        r.clusters[0]
            .table_warning
            .as_deref()
            .unwrap()
            .contains("101% of the filters' maxTableBytes (1000): it is not served")
    );

    // Back under, and over again: news again.
    w.tables.sizes.insert("east".into(), size(100));
    assert_eq!(w.observe(w.t0).clusters[0].table_warning, None);
    w.tables.sizes.insert("east".into(), size(2000));
    assert_eq!(w.observe(w.t0).events.len(), 3);
}
