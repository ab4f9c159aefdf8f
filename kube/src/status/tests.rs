//! Reconcile scenarios against a mock API server that asserts every call and answers it
//! as the API server would; and the pure plans behind them.

use super::*;
use crate::events::REPORTING_CONTROLLER;
use crate::index::{Change, KubeIndex};
use crate::lease::Clock;
use crate::testing::{ApiServer, Example, example, loaded, mock_client, objects_of};
use detour_core::decide::decide;
use detour_core::docs::TargetHealth;
use detour_core::health::HealthMap;
use detour_core::health::state::TargetState;
use detour_core::testing::EXAMPLE;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

const SCHEME_STATUS: &str = "/apis/detour.dev/v1alpha1/namespaces/apps/failoverschemes/foo/status?&force=true&fieldManager=detour";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/apps/events?";

fn cluster_status(name: &str) -> String {
    format!(
        "/apis/detour.dev/v1alpha1/memberclusters/{name}/status?&force=true&fieldManager=detour"
    )
}

/// A fixed wall-clock moment, and the moment the checks decided (for `since`).
fn wall(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000 + seconds)
}

/// Health as the checkers would have recorded it: `(cluster, healthy)` per target,
/// decided at wall time `at`.
fn board(snapshot: &Snapshot, health: &[(&str, bool)], at: u64) -> HealthMap {
    let model = &snapshot.model;
    let mut map = HealthMap::new();
    for scheme in &model.schemes {
        for target in scheme.targets() {
            let Some(&(_, healthy)) = health.iter().find(|(c, _)| *c == target.cluster) else {
                continue;
            };
            let spec = model.probe_spec(scheme, target).unwrap();
            let mut state = TargetState::new(Instant::now());
            let p = spec.check.clone();
            for _ in 0..p.unhealthy_threshold.max(p.healthy_threshold) {
                state.observe(healthy, &p, Instant::now());
            }
            state.since_wall = wall(at);
            map.insert(spec, state);
        }
    }
    map
}

/// The writer under test, always leading, with the mock API behind it.
fn writer() -> (StatusWriter, ApiServer) {
    let (client, api) = mock_client();
    let writer = StatusWriter::new(
        client.clone(),
        EventSink::new(client, "detour-0"),
        Leadership::always(),
        Arc::new(KubeMetrics::new()),
    );
    (writer, api)
}

/// The example with each MemberCluster's status already what detour reports for it,
/// so a scenario's calls are about the scheme alone.
fn settled(mut ex: Example) -> KubeIndex {
    let snapshot = loaded(&ex).snapshot();
    for c in &mut ex.clusters {
        c.status = Some(plan_cluster(c, None, &snapshot, None).status);
    }
    loaded(&ex)
}

/// What the API server answers to a status apply: the object with that status.
fn applied(object: &impl serde::Serialize, body: &Value) -> Value {
    let mut object = serde_json::to_value(object).unwrap();
    object["status"] = body["status"].clone();
    object
}

/// The example's scheme and clusters, to answer with.
fn objects() -> (FailoverScheme, BTreeMap<String, MemberCluster>) {
    let ex = example();
    let clusters = ex
        .clusters
        .iter()
        .map(|c| (c.metadata.name.clone().unwrap(), c.clone()))
        .collect();
    (ex.schemes[0].clone(), clusters)
}

fn targets(health: [(&str, &str); 3], since: u64) -> Value {
    let stamp = rfc3339(wall(since));
    Value::Array(
        health
            .iter()
            .map(|(cluster, h)| {
                json!({"cluster": cluster, "name": "foo", "namespace": "apps", "health": h, "since": stamp})
            })
            .collect(),
    )
}

/// Runs one sync against the mock while `script` plays the API server.
async fn sync_with<F, Fut>(
    writer: &mut StatusWriter,
    api: ApiServer,
    snapshot: &Snapshot,
    board: &HealthMap,
    at: u64,
    script: F,
) -> (Result<(), Error>, ApiServer)
where
    F: FnOnce(ApiServer) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ApiServer> + Send + 'static,
{
    sync_at(writer, api, snapshot, board, Instant::now(), at, script).await
}

/// [`sync_with`] at monotonic time `now`. The script and its check that no call follows
/// run beside the sync, so an unexpected call fails the test instead of hanging it.
async fn sync_at<F, Fut>(
    writer: &mut StatusWriter,
    api: ApiServer,
    snapshot: &Snapshot,
    board: &HealthMap,
    now: Instant,
    at: u64,
    script: F,
) -> (Result<(), Error>, ApiServer)
where
    F: FnOnce(ApiServer) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ApiServer> + Send + 'static,
{
    let server = tokio::spawn(async move {
        let mut api = script(api).await;
        api.no_more_calls().await;
        api
    });
    let decided = Decided::new(
        Arc::new(snapshot.model.clone()),
        Arc::new(board.clone()),
        now,
        wall(at),
    );
    let result = writer.sync(snapshot, &decided, &TableSet::default()).await;
    (result, server.await.unwrap())
}

#[tokio::test]
async fn an_accepted_scheme_gets_its_status_by_server_side_apply() {
    let ex = example();
    let (scheme, clusters) = objects();
    let snapshot = loaded(&ex).snapshot();
    let health = board(
        &snapshot,
        &[("east", true), ("west", true), ("south", true)],
        5,
    );
    let (mut writer, api) = writer();
    let (result, api) = sync_with(&mut writer, api, &snapshot, &health, 100, move |mut api| async move {
        let call = api.expect("PATCH", SCHEME_STATUS).await;
        assert_eq!(
            call.body,
            json!({
                "apiVersion": "detour.dev/v1alpha1",
                "kind": "FailoverScheme",
                "status": {
                    "state": "Accepted",
                    "message": "the primary takes the traffic",
                    "observedGeneration": 1,
                    "activeGroup": 0,
                    "targets": targets([("east", "Healthy"), ("west", "Healthy"), ("south", "Healthy")], 5),
                }
            })
        );
        let object = applied(&scheme, &call.body);
        call.reply(200, object);
        // Then each MemberCluster (by name), no Event: nothing changed hands.
        for name in ["east", "south", "west"] {
            let call = api.expect("PATCH", &cluster_status(name)).await;
            assert_eq!(
                call.body,
                json!({
                    "apiVersion": "detour.dev/v1alpha1",
                    "kind": "MemberCluster",
                    "status": {"state": "Accepted", "message": "services listed and watched",
                               "observedGeneration": 1, "services": 1}
                })
            );
            let object = applied(&clusters[name], &call.body);
            call.reply(200, object);
        }
        api
    })
    .await;
    result.unwrap();

    // The same again: nothing to write.
    let (result, _) = sync_with(&mut writer, api, &snapshot, &health, 200, |api| async {
        api
    })
    .await;
    result.unwrap();
}

#[tokio::test]
async fn an_invalid_scheme_gets_invalid_with_the_reason_and_an_event() {
    let text = EXAMPLE.replacen(
        "- {cluster: west, services",
        "- {cluster: nowhere, services",
        1,
    );
    let mut index = settled(objects_of(&text));
    let snapshot = index.snapshot();
    assert!(snapshot.model.schemes.is_empty());
    let reason = "spec.failoverGroups[0].priorityGroup[0].cluster: unknown cluster \"nowhere\" (MemberClusters: east, south, west)";
    let (mut writer, api) = writer();
    let (scheme, _) = objects();
    let (result, api) = sync_with(
        &mut writer,
        api,
        &snapshot,
        &HealthMap::new(),
        100,
        move |mut api| async move {
            let call = api.expect("PATCH", SCHEME_STATUS).await;
            assert_eq!(
                call.body["status"],
                json!({"state": "Invalid", "message": reason, "observedGeneration": 1})
            );
            let object = applied(&scheme, &call.body);
            call.reply(200, object);
            let event = api.expect("POST", EVENTS).await;
            let e = &event.body;
            assert_eq!(e["apiVersion"], "events.k8s.io/v1");
            assert_eq!(e["kind"], "Event");
            assert_eq!(e["type"], "Warning");
            assert_eq!(e["reason"], "Invalid");
            assert_eq!(e["action"], "Validate");
            assert_eq!(e["note"], reason, "the message names the field");
            assert_eq!(e["reportingController"], REPORTING_CONTROLLER);
            assert_eq!(e["reportingInstance"], "detour-0");
            assert_eq!(
                (
                    &e["regarding"]["kind"],
                    &e["regarding"]["name"],
                    &e["regarding"]["namespace"]
                ),
                (&json!("FailoverScheme"), &json!("foo"), &json!("apps"))
            );
            assert_eq!(e["regarding"]["uid"], "uid-apps-foo");
            assert!(e["metadata"]["name"].as_str().unwrap().starts_with("foo."));
            event.echo(201);
            api
        },
    )
    .await;
    result.unwrap();

    // Reported once: no second Event while the message stays the same.
    let (result, api) = sync_with(
        &mut writer,
        api,
        &snapshot,
        &HealthMap::new(),
        200,
        |api| async { api },
    )
    .await;
    result.unwrap();

    // A fix: Accepted, and an Event saying so.
    let fixed = objects_of(EXAMPLE).schemes[0].clone();
    index.schemes(Change::Apply(fixed));
    let snapshot = index.snapshot();
    let health = board(
        &snapshot,
        &[("east", true), ("west", true), ("south", true)],
        5,
    );
    let (result, _) = sync_with(
        &mut writer,
        api,
        &snapshot,
        &health,
        300,
        |mut api| async move {
            let call = api.expect("PATCH", SCHEME_STATUS).await;
            assert_eq!(call.body["status"]["state"], "Accepted");
            let object = applied(&objects().0, &call.body);
            call.reply(200, object);
            let event = api.expect("POST", EVENTS).await;
            assert_eq!(event.body["reason"], "Accepted");
            assert_eq!(event.body["type"], "Normal");
            event.echo(201);
            // West's service is named again: its MemberCluster counts it.
            let call = api.expect("PATCH", &cluster_status("west")).await;
            assert_eq!(call.body["status"]["services"], 1);
            let object = applied(&objects().1["west"], &call.body);
            call.reply(200, object);
            api
        },
    )
    .await;
    result.unwrap();
}

#[tokio::test]
async fn failover_and_failback_write_the_active_group_and_an_event_each() {
    let mut index = settled(example());
    let snapshot = index.snapshot();
    let healthy = board(
        &snapshot,
        &[("east", true), ("west", true), ("south", true)],
        5,
    );
    let (mut writer, api) = writer();
    let (result, api) = sync_with(
        &mut writer,
        api,
        &snapshot,
        &healthy,
        100,
        |mut api| async move {
            let call = api.expect("PATCH", SCHEME_STATUS).await;
            let object = applied(&objects().0, &call.body);
            call.reply(200, object);
            api
        },
    )
    .await;
    result.unwrap();

    // East fails: the filter's selection moves to group 1.
    let mut failed = healthy.clone();
    for (spec, state) in failed.iter_mut() {
        if spec.target.cluster == "east" {
            let p = spec.check.clone();
            for _ in 0..p.unhealthy_threshold {
                state.observe(false, &p, Instant::now());
            }
            state.since_wall = wall(50);
        }
    }
    let (result, api) = sync_with(&mut writer, api, &snapshot, &failed, 100, |mut api| async move {
        let call = api.expect("PATCH", SCHEME_STATUS).await;
        let status = &call.body["status"];
        assert_eq!(status["activeGroup"], 1);
        assert_eq!(status["state"], "Accepted");
        assert_eq!(
            status["message"],
            "failed over: failover group 1 (apps/foo in west: Healthy) takes the traffic"
        );
        assert_eq!(status["targets"][0]["health"], "Unhealthy");
        assert_eq!(status["targets"][0]["since"], rfc3339(wall(50)));
        assert_eq!(status["targets"][1]["since"], rfc3339(wall(5)), "unchanged health keeps its time");
        let object = applied(&objects().0, &call.body);
        call.reply(200, object);
        let event = api.expect("POST", EVENTS).await;
        assert_eq!(event.body["reason"], "FailedOver");
        assert_eq!(event.body["type"], "Warning");
        assert_eq!(event.body["action"], "Route");
        assert_eq!(
            event.body["note"],
            "traffic for apps/foo moves from the primary (apps/foo in east: Unhealthy) to failover group 1 (apps/foo in west: Healthy)"
        );
        event.echo(201);
        api
    })
    .await;
    result.unwrap();

    // East's pods are back but east stays damped until failback.stableFor has passed:
    // no change to report; then the traffic returns, with a FailedBack Event.
    let mut back = failed.clone();
    let recovered = Instant::now();
    for (spec, state) in back.iter_mut() {
        if spec.target.cluster == "east" {
            let p = spec.check.clone();
            for _ in 0..p.healthy_threshold {
                state.observe(true, &p, recovered);
            }
            state.since_wall = wall(60);
        }
    }
    let views_now = |at: Instant| decide(&snapshot.model, &back, at).views;
    assert_eq!(views_now(recovered)[0].active_group, 1, "damped");
    let stable_for = snapshot.model.schemes[0].failback.stable_for;
    let later = recovered + stable_for;
    assert_eq!(views_now(later)[0].active_group, 0);
    let (result, api) = sync_at(
        &mut writer,
        api,
        &snapshot,
        &back,
        later,
        80,
        |mut api| async move {
            let call = api.expect("PATCH", SCHEME_STATUS).await;
            assert_eq!(call.body["status"]["activeGroup"], 0);
            let object = applied(&objects().0, &call.body);
            call.reply(200, object);
            let event = api.expect("POST", EVENTS).await;
            assert_eq!(event.body["reason"], "FailedBack");
            assert_eq!(event.body["type"], "Normal");
            event.echo(201);
            api
        },
    )
    .await;
    result.unwrap();

    // The scheme deleted: its memory goes too, and no service is named any more.
    index.schemes(Change::Reset(vec![]));
    let (result, _) = sync_at(
        &mut writer,
        api,
        &index.snapshot(),
        &back,
        later,
        90,
        |mut api| async move {
            for name in ["east", "south", "west"] {
                let call = api.expect("PATCH", &cluster_status(name)).await;
                assert_eq!(call.body["status"]["services"], 0);
                let object = applied(&objects().1[name], &call.body);
                call.reply(200, object);
            }
            api
        },
    )
    .await;
    result.unwrap();
    assert!(writer.schemes.is_empty());
}

struct FakeClock(Mutex<Instant>);

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }
}

#[tokio::test]
async fn losing_the_lease_stops_writing_at_once() {
    let snapshot = settled(example()).snapshot();
    let health = board(
        &snapshot,
        &[("east", true), ("west", true), ("south", true)],
        5,
    );
    let t0 = Instant::now();
    let clock = Arc::new(FakeClock(Mutex::new(t0)));
    let leadership = Leadership::new(clock.clone());
    leadership.set(Some(t0 + Duration::from_secs(10)));
    let (client, mut api) = mock_client();
    let mut writer = StatusWriter::new(
        client.clone(),
        EventSink::new(client, "detour-0"),
        leadership,
        Arc::new(KubeMetrics::new()),
    );
    // The renewal deadline passes with no call from anyone: writes stop by the clock.
    *clock.0.lock().unwrap() = t0 + Duration::from_secs(10);
    let decided = Decided::new(
        Arc::new(snapshot.model.clone()),
        Arc::new(health),
        Instant::now(),
        wall(100),
    );
    let result = writer.sync(&snapshot, &decided, &TableSet::default()).await;
    assert!(matches!(result, Err(Error::NotLeader)), "{result:?}");
    api.no_more_calls().await;
}

#[tokio::test]
async fn an_api_error_is_reported_and_retried_later() {
    let snapshot = settled(example()).snapshot();
    let health = board(
        &snapshot,
        &[("east", true), ("west", true), ("south", true)],
        5,
    );
    let (mut writer, api) = writer();
    let (result, api) = sync_with(
        &mut writer,
        api,
        &snapshot,
        &health,
        100,
        |mut api| async move {
            let call = api.expect("PATCH", SCHEME_STATUS).await;
            call.reply(
                500,
                crate::testing::status_body(500, "InternalError", "etcd is sad"),
            );
            api
        },
    )
    .await;
    let e = result.unwrap_err();
    assert_eq!(e.metric_label(), "api_status");
    // Not remembered as written: the next sync writes it.
    let (result, _) = sync_with(
        &mut writer,
        api,
        &snapshot,
        &health,
        100,
        |mut api| async move {
            let call = api.expect("PATCH", SCHEME_STATUS).await;
            let object = applied(&objects().0, &call.body);
            call.reply(200, object);
            api
        },
    )
    .await;
    result.unwrap();
}

// The pure plans.

/// The MemberCluster `name` of `snapshot`.
fn member<'a>(snapshot: &'a Snapshot, name: &str) -> &'a MemberCluster {
    snapshot
        .clusters
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(name))
        .unwrap()
}

fn plan_of(
    index: &mut KubeIndex,
    previous: Option<&FailoverSchemeStatus>,
    health: &HealthMap,
) -> Option<Plan<FailoverSchemeStatus>> {
    let snapshot = index.snapshot();
    let scheme = snapshot.schemes[0].clone();
    let views = decide(&snapshot.model, health, Instant::now()).views;
    plan_scheme(&scheme, previous, &snapshot, views.first(), wall(0))
}

#[test]
fn a_scheme_waits_for_its_member_clusters_first_listing() {
    let ex = example();
    let mut index = KubeIndex::new();
    index.secrets(Change::Reset(vec![]));
    index.clusters(Change::Reset(ex.clusters.clone()));
    index.schemes(Change::Reset(ex.schemes.clone()));
    for (cluster, (services, slices)) in &ex.discovered {
        let epoch = index.connect(cluster);
        if cluster != "south" {
            index.services(cluster, epoch, Change::Reset(services.clone()));
            index.slices(cluster, epoch, Change::Reset(slices.clone()));
        }
    }
    let plan = plan_of(&mut index, None, &HealthMap::new()).unwrap();
    assert_eq!(plan.status.state, Some(SchemeState::Pending));
    assert_eq!(
        plan.status.message.as_deref(),
        Some("waiting for the services of member cluster(s) south")
    );
    assert!(plan.notices.is_empty(), "waiting is not a rejection");

    index.member_failed("south", index.epoch("south"), "connection refused".into());
    let plan = plan_of(&mut index, None, &HealthMap::new()).unwrap();
    assert_eq!(plan.status.state, Some(SchemeState::Failed));
    assert_eq!(
        plan.status.message.as_deref(),
        Some("member cluster south cannot be reached: connection refused")
    );
}

#[test]
fn a_stale_member_cluster_is_said_but_still_served() {
    let mut index = loaded(&example());
    index.member_failed("west", index.epoch("west"), "watch failed".into());
    let plan = plan_of(&mut index, None, &HealthMap::new()).unwrap();
    assert_eq!(plan.status.state, Some(SchemeState::Accepted));
    let message = plan.status.message.unwrap();
    assert!(
        message.ends_with(
            "member cluster west cannot be watched (watch failed): its last known services are used"
        ),
        "{message}"
    );
}

#[test]
fn unchecked_targets_do_not_move_a_reported_group() {
    let mut index = loaded(&example());
    let previous = FailoverSchemeStatus {
        state: Some(SchemeState::Accepted),
        active_group: Some(1),
        ..FailoverSchemeStatus::default()
    };
    assert_eq!(plan_of(&mut index, Some(&previous), &HashMap::new()), None);
    // A first report has nothing to protect.
    let plan = plan_of(&mut index, None, &HashMap::new()).unwrap();
    assert_eq!(plan.status.active_group, Some(0));
    assert!(
        plan.status
            .targets
            .iter()
            .all(|t| t.health == TargetHealth::Unknown)
    );
}

#[test]
fn member_cluster_plans() {
    let text = EXAMPLE.replacen("address: 127.0.2.1", "address: 127.0.1.1", 1);
    let ex = objects_of(&text);
    let mut index = loaded(&ex);
    let snapshot = index.snapshot();
    let west = member(&snapshot, "west");
    let plan = plan_cluster(west, None, &snapshot, None);
    assert_eq!(plan.status.state, Some(SchemeState::Invalid));
    assert!(
        plan.status
            .message
            .as_deref()
            .unwrap()
            .starts_with("spec.gateway: 127.0.1.1:15443 is already the gateway")
    );
    assert_eq!(plan.notices[0].reason, "Invalid");
    // Reported already: no second Event.
    assert!(
        plan_cluster(west, Some(&plan.status), &snapshot, None)
            .notices
            .is_empty()
    );

    let east = member(&snapshot, "east");
    index.member_failed("east", index.epoch("east"), "Unauthorized".into());
    let plan = plan_cluster(east, None, &index.snapshot(), None);
    assert_eq!(plan.status.state, Some(SchemeState::Failed));
    assert_eq!(
        plan.status.message.as_deref(),
        Some("cannot watch the cluster (Unauthorized); its last known services are used")
    );
    assert_eq!(plan.status.services, Some(1));
}

#[test]
fn a_table_near_or_over_the_limit_is_in_the_member_clusters_status_with_an_event_per_crossing() {
    let mut index = loaded(&example());
    let snapshot = index.snapshot();
    let east = member(&snapshot, "east");
    let plan_at = |bytes, previous: Option<&MemberClusterStatus>| {
        plan_cluster(
            east,
            previous,
            &snapshot,
            Some(&TableSize { bytes, max: 1000 }),
        )
    };
    let reasons = |plan: &Plan<MemberClusterStatus>| -> Vec<&str> {
        plan.notices.iter().map(|n| n.reason).collect()
    };

    let fine = plan_at(800, None);
    assert_eq!(fine.status.table, None, "80% is no news");
    assert!(fine.notices.is_empty());

    let near = plan_at(850, Some(&fine.status));
    let table = near.status.table.clone().unwrap();
    assert_eq!((table.percent_of_limit, table.served), (85, true));
    assert_eq!(
        table.message,
        "the table is 85% of the filters' maxTableBytes (1000): past it, it will not be served"
    );
    assert_eq!(reasons(&near), ["TableNearLimit"]);
    assert_eq!(near.notices[0].type_, EventType::Warning);
    // Growing without crossing the limit: the status follows, no second Event.
    let nearer = plan_at(900, Some(&near.status));
    assert_eq!(nearer.status.table.as_ref().unwrap().percent_of_limit, 90);
    assert!(nearer.notices.is_empty());

    let over = plan_at(1001, Some(&nearer.status));
    let table = over.status.table.clone().unwrap();
    assert_eq!((table.percent_of_limit, table.served), (101, false));
    assert!(
        table
            .message
            .contains("it is not served and the last good table stays"),
        "{}",
        table.message
    );
    assert_eq!(reasons(&over), ["TableRefused"]);
    assert!(plan_at(1200, Some(&over.status)).notices.is_empty());
    // Straight over the limit from nothing: refused, not "near".
    assert_eq!(reasons(&plan_at(2000, None)), ["TableRefused"]);

    // Back under 80%: the warning goes, quietly.
    let back = plan_at(500, Some(&over.status));
    assert_eq!(back.status.table, None);
    assert!(back.notices.is_empty());
    // Exactly the limit is still served.
    assert!(plan_at(1000, None).status.table.unwrap().served);
    // The state of the cluster itself is not touched by its table.
    assert_eq!(over.status.state, fine.status.state);
}

#[tokio::test]
async fn a_refused_table_is_written_to_the_member_clusters_status_with_an_event() {
    let snapshot = settled(example()).snapshot();
    let (mut writer, api) = writer();
    let mut tables = TableSet::default();
    tables.sizes.insert(
        "west".into(),
        TableSize {
            bytes: 5000,
            max: 4096,
        },
    );
    let decided = Decided::new(
        Arc::new(snapshot.model.clone()),
        Arc::new(HealthMap::new()),
        Instant::now(),
        wall(0),
    );
    let (scheme, clusters) = objects();
    let server = tokio::spawn(async move {
        let mut api = api;
        let call = api.expect("PATCH", SCHEME_STATUS).await;
        let object = applied(&scheme, &call.body);
        call.reply(200, object);
        // Only west's status changed: its table.
        let call = api.expect("PATCH", &cluster_status("west")).await;
        let table = call.body["status"]["table"].clone();
        let object = applied(&clusters["west"], &call.body);
        call.reply(200, object);
        let event = api
            .expect("POST", "/apis/events.k8s.io/v1/namespaces/default/events?")
            .await;
        let body = event.body.clone();
        event.reply(201, body.clone());
        api.no_more_calls().await;
        (table, body)
    });
    writer.sync(&snapshot, &decided, &tables).await.unwrap();
    let (table, event) = server.await.unwrap();
    assert_eq!(table["percentOfLimit"], 123);
    assert_eq!(table["served"], false);
    assert_eq!(event["reason"], "TableRefused");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["regarding"]["kind"], "MemberCluster");
    assert_eq!(event["regarding"]["name"], "west");
    let note = event["note"].as_str().unwrap();
    assert!(note.contains("maxTableBytes (4096)"), "{note}");
}

#[tokio::test]
async fn the_writer_reports_while_leading_and_stops_when_the_lease_goes() {
    let ex = example();
    let mut index = loaded(&ex);
    let snapshot = index.snapshot();
    let health = board(
        &snapshot,
        &[("east", true), ("west", true), ("south", true)],
        5,
    );
    let (client, mut api) = mock_client();
    let leadership = Leadership::new(Arc::new(crate::lease::SystemClock));
    leadership.set(Some(Instant::now() + Duration::from_secs(60)));
    let writer = StatusWriter::new(
        client.clone(),
        EventSink::new(client, "detour-0"),
        leadership.clone(),
        Arc::new(KubeMetrics::new()),
    );
    let decided = Decided::new(
        Arc::new(snapshot.model.clone()),
        Arc::new(health),
        Instant::now(),
        SystemTime::now(),
    );
    let (snapshots_tx, snapshots) = watch::channel(Arc::new(snapshot));
    let (_decisions_tx, decisions) = watch::channel(Arc::new(decided));
    let (_tables_tx, tables) = watch::channel(Arc::new(TableSet::default()));
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(writer, snapshots, decisions, tables, stopped));

    // Leading: everything is reported once. What the API server answers is what its
    // watch then delivers to the index.
    let (scheme, clusters) = objects();
    let call = api.expect("PATCH", SCHEME_STATUS).await;
    let object = applied(&scheme, &call.body);
    call.reply(200, object.clone());
    let reported: FailoverScheme = serde_json::from_value(object).unwrap();
    for name in ["east", "south", "west"] {
        let call = api.expect("PATCH", &cluster_status(name)).await;
        let object = applied(&clusters[name], &call.body);
        call.reply(200, object.clone());
        index.clusters(Change::Apply(serde_json::from_value(object).unwrap()));
    }
    api.no_more_calls().await;

    // The lease goes; the scheme changes: nothing is written.
    leadership.set(None);
    let mut changed = reported.clone();
    changed.metadata.generation = Some(2);
    index.schemes(Change::Apply(changed));
    snapshots_tx.send_replace(Arc::new(index.snapshot()));
    api.no_more_calls().await;

    // Leading again: what changed meanwhile is reported.
    leadership.set(Some(Instant::now() + Duration::from_secs(60)));
    let call = api.expect("PATCH", SCHEME_STATUS).await;
    assert_eq!(call.body["status"]["observedGeneration"], 2);
    let object = applied(&scheme, &call.body);
    call.reply(200, object);
    api.no_more_calls().await;
    stop.send(true).unwrap();
    task.await.unwrap();
}
