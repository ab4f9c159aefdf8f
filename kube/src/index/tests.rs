//! The Kubernetes index against the file path: the same documents, whether read from
//! files or from CRDs plus discovered Services and EndpointSlices, give the same model and
//! the same tables (one validation, one table builder).

use super::*;
use crate::testing::{Example, example, loaded, mk_service, mk_slice, objects_of};
use detour_core::decide::{Decision, decide};
use detour_core::docs::load::parse_file;
use detour_core::testing::EXAMPLE;
use detour_core::validate::build_model;
use detour_filter::health::Health;
use std::collections::HashMap;
use std::time::Instant;

/// The file path: documents → model → tables, with no health yet.
fn file_tables(text: &str) -> (Model, Decision) {
    let (docs, problems) = parse_file("files.yaml", text);
    assert!(problems.is_empty(), "{problems:?}");
    let model = build_model(&docs).unwrap();
    let built = decide(&model, &HashMap::new(), Instant::now());
    (model, built)
}

fn kube_tables(snapshot: &Snapshot) -> Decision {
    decide(&snapshot.model, &HashMap::new(), Instant::now())
}

#[test]
fn crds_and_discovery_give_the_file_tables() {
    let (file_model, file_built) = file_tables(EXAMPLE);
    let ex = example();
    assert!(
        ex.clusters.iter().all(|c| c.spec.services.is_empty()),
        "in Kubernetes the services are discovered"
    );
    let snapshot = loaded(&ex).snapshot();
    assert!(snapshot.problems.is_empty(), "{:?}", snapshot.problems);
    assert!(snapshot.ready);
    assert_eq!(snapshot.model, file_model);
    assert_eq!(kube_tables(&snapshot).tables, file_built.tables);
}

#[test]
fn endpoint_slices_applied_and_deleted_change_the_table() {
    let ex = example();
    let mut index = loaded(&ex);
    let epoch = index.epoch("west").unwrap();

    // A second ready pod in west: the same as a file listing two endpoints.
    let more = mk_slice(
        "apps",
        "foo",
        "foo-extra",
        &[("http", 8080)],
        &[("127.0.2.11", Some(true))],
    );
    index.slices("west", epoch, Change::Apply(more.clone()));
    let two = EXAMPLE.replace(
        "endpoints: [\"127.0.2.10:8080\"]",
        "endpoints: [\"127.0.2.10:8080\", \"127.0.2.11:8080\"]",
    );
    let (file_model, file_built) = file_tables(&two);
    let snapshot = index.snapshot();
    assert_eq!(snapshot.model, file_model);
    assert_eq!(kube_tables(&snapshot).tables, file_built.tables);

    // Deleted again: back to the example.
    index.slices("west", epoch, Change::Delete(more));
    assert_eq!(index.snapshot().model, file_tables(EXAMPLE).0);

    // East's pods all go: its service stays, with no endpoint, and its target in the
    // table is Unhealthy at once (nothing was probed).
    let east = index.epoch("east").unwrap();
    let (_, east_slices) = &ex.discovered["east"];
    index.slices("east", east, Change::Delete(east_slices[0].clone()));
    let snapshot = index.snapshot();
    assert!(snapshot.problems.is_empty(), "{:?}", snapshot.problems);
    let built = kube_tables(&snapshot);
    let scheme = &built.tables["east"].schemes[0];
    assert_eq!(scheme.groups[0][0].cluster, "east");
    assert_eq!(scheme.groups[0][0].health, Health::Unhealthy);
    assert_eq!(scheme.groups[1][0].health, Health::Unknown);

    // A pod that is not ready does not count either.
    let unready = mk_slice(
        "apps",
        "foo",
        "foo-0",
        &[("http", 8080)],
        &[("127.0.1.10", Some(false))],
    );
    index.slices("east", east, Change::Apply(unready));
    let built = kube_tables(&index.snapshot());
    assert_eq!(
        built.tables["east"].schemes[0].groups[0][0].health,
        Health::Unhealthy
    );
}

#[test]
fn a_deleted_service_makes_its_scheme_invalid_and_unserved() {
    let ex = example();
    let mut index = loaded(&ex);
    let epoch = index.epoch("south").unwrap();
    index.services(
        "south",
        epoch,
        Change::Delete(ex.discovered["south"].0[0].clone()),
    );
    let snapshot = index.snapshot();
    let key = ObjectRef {
        kind: Kind::FailoverScheme,
        namespace: Some("apps".into()),
        name: "foo".into(),
    };
    let problems = &snapshot.problems[&key];
    assert_eq!(
        problems[0].to_string(),
        "kubernetes (FailoverScheme apps/foo): spec.failoverGroups[1].priorityGroup[0].services[0]: \
         unknown service apps/foo in cluster \"south\": that cluster has no such Service"
    );
    assert!(snapshot.model.schemes.is_empty());
    assert!(kube_tables(&snapshot).tables["east"].schemes.is_empty());
    // The clusters themselves stay valid and served.
    assert_eq!(snapshot.model.clusters.len(), 3);
}

#[test]
fn only_services_a_scheme_names_enter_the_model() {
    let ex = example();
    let mut index = loaded(&ex);
    let epoch = index.epoch("west").unwrap();
    index.services(
        "west",
        epoch,
        Change::Apply(mk_service("apps", "unrelated", &[("http", 80)])),
    );
    assert_eq!(index.snapshot().model, file_tables(EXAMPLE).0);
    assert_eq!(
        index.snapshot().members["west"].services,
        2,
        "counted, not modelled"
    );
    // ... and listed for the status API, with the port detour would use.
    let west: Vec<(String, u16)> = index.snapshot().catalogue["west"]
        .iter()
        .map(|s| (s.name.to_string(), s.port))
        .collect();
    assert_eq!(
        west,
        [
            ("apps/foo".to_string(), 8080),
            ("apps/unrelated".to_string(), 80)
        ]
    );
}

#[test]
fn a_relist_replaces_and_stale_connections_are_ignored() {
    let ex = example();
    let mut index = loaded(&ex);
    let old = index.epoch("west").unwrap();
    // The kubeconfig changed: a new connection; until it lists, the old services stay.
    let new = index.connect("west");
    assert_ne!(old, new);
    let snapshot = index.snapshot();
    assert_eq!(snapshot.members["west"].sync, Sync::Waiting);
    assert!(snapshot.members["west"].ever_synced);
    assert_eq!(
        snapshot.model,
        file_tables(EXAMPLE).0,
        "fail static across reconnects"
    );
    // Events of the old connection are dropped.
    index.services("west", old, Change::Reset(vec![]));
    assert_eq!(index.snapshot().model, file_tables(EXAMPLE).0);
    // The new connection's listing counts, slices and services alike.
    let (services, slices) = &ex.discovered["west"];
    index.services("west", new, Change::Reset(services.clone()));
    assert_eq!(index.snapshot().members["west"].sync, Sync::Waiting);
    index.slices("west", new, Change::Reset(slices.clone()));
    assert_eq!(index.snapshot().members["west"].sync, Sync::Synced);
}

#[test]
fn watch_events_become_changes_after_a_complete_listing() {
    let mut relist = Relist::<u32>::default();
    assert!(relist.feed(watcher::Event::Init).is_none());
    assert!(relist.feed(watcher::Event::InitApply(1)).is_none());
    assert!(relist.feed(watcher::Event::InitApply(2)).is_none());
    assert!(matches!(relist.feed(watcher::Event::InitDone), Some(Change::Reset(v)) if v == [1, 2]));
    assert!(matches!(
        relist.feed(watcher::Event::Apply(3)),
        Some(Change::Apply(3))
    ));
    assert!(matches!(
        relist.feed(watcher::Event::Delete(3)),
        Some(Change::Delete(3))
    ));
    // An empty relist clears.
    relist.feed(watcher::Event::Init);
    assert!(
        matches!(relist.feed(watcher::Event::InitDone), Some(Change::Reset(v)) if v.is_empty())
    );
}

#[test]
fn the_older_of_two_schemes_for_one_primary_wins_whatever_the_order_seen() {
    let scheme = &EXAMPLE[EXAMPLE
        .find("apiVersion: detour.dev/v1alpha1\nkind: FailoverScheme")
        .unwrap()..];
    let text = format!(
        "{EXAMPLE}---\n{}",
        scheme.replace(
            "{name: foo, namespace: apps}\nspec",
            "{name: foo-too, namespace: apps}\nspec"
        )
    );
    let ex = objects_of(&text);
    let (older, newer) = (ex.schemes[0].clone(), ex.schemes[1].clone());
    for order in [
        [older.clone(), newer.clone()],
        [newer.clone(), older.clone()],
    ] {
        let mut index = loaded(&Example {
            schemes: vec![],
            ..objects_of(&text)
        });
        for s in order {
            index.schemes(Change::Apply(s));
        }
        let snapshot = index.snapshot();
        assert_eq!(snapshot.model.schemes.len(), 1);
        assert_eq!(snapshot.model.schemes[0].name, "foo");
        let key = ObjectRef {
            kind: Kind::FailoverScheme,
            namespace: Some("apps".into()),
            name: "foo-too".into(),
        };
        assert!(
            snapshot.problems[&key][0]
                .message
                .contains("is already the primary of")
        );
    }
}

#[test]
fn a_scheme_naming_an_invalid_cluster_is_left_out_with_a_reason() {
    let text = EXAMPLE.replacen("address: 127.0.2.1", "address: 127.0.1.1", 1);
    let ex = objects_of(&text);
    let snapshot = loaded(&ex).snapshot();
    let west = ObjectRef {
        kind: Kind::MemberCluster,
        namespace: None,
        name: "west".into(),
    };
    assert!(
        snapshot.problems[&west][0]
            .message
            .contains("is already the gateway of")
    );
    let foo = ObjectRef {
        kind: Kind::FailoverScheme,
        namespace: Some("apps".into()),
        name: "foo".into(),
    };
    assert_eq!(
        snapshot.problems[&foo][0].message,
        "MemberCluster \"west\" is invalid (see its own problems)"
    );
    assert!(snapshot.model.schemes.is_empty());
    assert_eq!(
        snapshot.model.clusters.len(),
        2,
        "east and south still serve"
    );
}

#[test]
fn member_clusters_connect_locally_or_through_their_secret() {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    let text = EXAMPLE.replacen(
        "metadata: {name: west}\nspec:\n",
        "metadata: {name: west}\nspec:\n  kubeconfigSecret: {name: west-kubeconfig}\n",
        1,
    );
    let mut index = loaded(&objects_of(&text));
    let connections = index.connections();
    assert_eq!(connections["east"], Ok(Connection::Local));
    let missing = connections["west"].clone().unwrap_err();
    assert!(
        missing.contains("\"west-kubeconfig\" not found"),
        "{missing}"
    );
    assert!(missing.contains("detour.dev/kubeconfig=true"), "{missing}");

    let secret = |key: &str| Secret {
        metadata: crate::testing::meta(Some("detour-system"), "west-kubeconfig", 1, 0),
        data: Some(BTreeMap::from([(
            key.to_string(),
            ByteString(b"apiVersion: v1".to_vec()),
        )])),
        ..Secret::default()
    };
    index.secrets(Change::Apply(secret("other")));
    let wrong_key = index.connections()["west"].clone().unwrap_err();
    assert!(
        wrong_key.contains("has no key \"kubeconfig\""),
        "{wrong_key}"
    );
    index.secrets(Change::Apply(secret("kubeconfig")));
    assert_eq!(
        index.connections()["west"],
        Ok(Connection::Kubeconfig {
            secret: "west-kubeconfig".into(),
            kubeconfig: "apiVersion: v1".into()
        })
    );

    // A failing member keeps its services; ready counts it as settled.
    index.member_failed("west", None, "no route to host".into());
    let snapshot = index.snapshot();
    assert_eq!(
        snapshot.members["west"].sync,
        Sync::Failed("no route to host".into())
    );
    assert_eq!(snapshot.model, file_tables(EXAMPLE).0);
    assert!(snapshot.ready);
}

#[test]
fn not_ready_until_everything_is_listed() {
    let ex = example();
    let mut index = KubeIndex::new();
    index.clusters(Change::Reset(ex.clusters.clone()));
    index.schemes(Change::Reset(ex.schemes.clone()));
    assert!(!index.snapshot().ready, "secrets not listed");
    index.secrets(Change::Reset(vec![]));
    assert!(!index.snapshot().ready, "member clusters not listed");
    let snapshot = index.snapshot();
    assert!(snapshot.members.is_empty());
    for (cluster, (services, slices)) in &ex.discovered {
        let epoch = index.connect(cluster);
        index.services(cluster, epoch, Change::Reset(services.clone()));
        index.slices(cluster, epoch, Change::Reset(slices.clone()));
    }
    assert!(index.snapshot().ready);
    // A deleted MemberCluster takes its services and state with it.
    index.clusters(Change::Delete(ex.clusters[2].clone()));
    let snapshot = index.snapshot();
    assert!(!snapshot.members.contains_key("south"));
    assert_eq!(index.epoch("south"), None);
}
