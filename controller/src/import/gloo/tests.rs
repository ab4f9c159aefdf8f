//! The import on the fixtures in `tests/fixtures/gloo/` and on small inline documents.

use super::*;
use crate::source::files::read_dir;
use detour_core::docs::load::parse_file;
use detour_core::docs::{
    FailoverSchemeSpec, GrpcHealthCheckSpec, HealthCheckSpec, MemberClusterSpec,
};
use detour_core::model::Model;
use std::path::PathBuf;

fn fixtures(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gloo")
        .join(dir)
}

/// Options with a gateway for each `CLUSTER=HOST`.
fn with_gateways(gateways: &[&str]) -> Options {
    Options {
        gateways: gateways
            .iter()
            .map(|g| {
                let (cluster, host) = g.split_once('=').unwrap();
                (cluster.to_string(), (host.to_string(), 15443))
            })
            .collect(),
        kubernetes: false,
    }
}

fn import_fixture(dir: &str, opts: &Options) -> Result<Imported, Vec<Problem>> {
    import(&read_dir(&fixtures(dir)).unwrap(), opts)
}

fn import_text(text: &str, opts: &Options) -> Result<Imported, Vec<Problem>> {
    let file = SourceFile {
        path: "gloo.yaml".into(),
        text: text.to_string(),
    };
    import(&[file], opts)
}

fn refusals(result: Result<Imported, Vec<Problem>>) -> Vec<String> {
    match result {
        Ok(imported) => panic!("imported: {imported:?}"),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

fn notes(imported: &Imported) -> Vec<String> {
    imported.report.iter().map(ToString::to_string).collect()
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

fn scheme<'a>(imported: &'a Imported, name: &str) -> &'a FailoverSchemeSpec {
    let found = imported.schemes.iter().find(|(_, n, _)| n == name);
    &found.unwrap_or_else(|| panic!("no scheme {name}")).2
}

fn cluster<'a>(imported: &'a Imported, name: &str) -> &'a MemberClusterSpec {
    let found = imported.clusters.iter().find(|(n, _)| n == name);
    &found.unwrap_or_else(|| panic!("no cluster {name}")).1
}

/// The output read back by the loader `detour check` uses, and validated.
fn validate(imported: &Imported) -> Result<Model, Vec<detour_core::docs::Problem>> {
    let yaml = output::to_yaml(imported).unwrap();
    let (docs, problems) = parse_file("out.yaml", &yaml);
    assert!(problems.is_empty(), "{problems:?}\n{yaml}");
    detour_core::validate::build_model(&docs)
}

/// A scheme, `{{upstream}}` and `{{cluster}}` of its single target to fill in.
const SCHEME: &str = "apiVersion: fed.solo.io/v1
kind: FailoverScheme
metadata: {name: foo, namespace: gloo-system}
spec:
  primary: {clusterName: east, name: apps-foo-8080, namespace: gloo-system}
  failoverGroups:
  - priorityGroup:
    - cluster: {{cluster}}
      upstreams: [{name: {{upstream}}, namespace: gloo-system}]
";

fn scheme_to(cluster: &str, upstream: &str) -> String {
    SCHEME
        .replace("{{cluster}}", cluster)
        .replace("{{upstream}}", upstream)
}

#[test]
fn the_failover_guide_fails_blue_over_to_green_as_written() {
    let opts = with_gateways(&["local=10.0.1.1", "remote=10.0.2.1"]);
    let imported = import_fixture("guide", &opts).unwrap();
    let spec = scheme(&imported, "failover-scheme");
    // Written in its primary's namespace (a detour scheme protects only its own
    // namespace's primaries), and the report says so.
    assert_eq!(imported.schemes[0].0, "default");
    assert!(has(
        &notes(&imported),
        "(FailoverScheme gloo-system/failover-scheme): metadata.namespace: written in namespace \"default\", its primary's, not \"gloo-system\""
    ));
    assert_eq!(
        (
            spec.primary.cluster.as_str(),
            spec.primary.namespace.as_str(),
            spec.primary.name.as_str()
        ),
        ("local", "default", "service-blue")
    );
    let target = &spec.failover_groups[0].priority_group[0];
    assert_eq!(target.cluster, "remote");
    assert_eq!(
        (
            target.services[0].namespace.as_str(),
            target.services[0].name.as_str()
        ),
        ("default", "service-green")
    );
    assert_eq!(target.weight, None);
    // The guide's check of blue, on /health, not detour's /healthz.
    assert_eq!(
        spec.health_check,
        Some(HealthCheckSpec {
            path: Some("/health".into()),
            grpc: None,
            interval: Some("1s".into()),
            timeout: Some("1s".into()),
            unhealthy_threshold: Some(1),
            healthy_threshold: Some(1),
        })
    );
    let local = cluster(&imported, "local");
    assert_eq!(local.gateway.address.as_deref(), Some("10.0.1.1"));
    assert_eq!(
        local.services[0].endpoints,
        ["service-blue.default.svc.cluster.local:10000"]
    );
    assert_eq!(
        cluster(&imported, "remote").services[0].name,
        "service-green"
    );

    let notes = notes(&imported);
    assert!(
        has(
            &notes,
            "failover.yaml: document 2 (FailoverScheme gloo-system/failover-scheme): spec.failoverGroups[0].priorityGroup[0].upstreams[0]: Upstream gloo-system/default-service-green-10000 (cluster remote) is not among the documents read: taken as Service default/service-green port 10000, by Gloo discovery's NAMESPACE-NAME-PORT naming"
        ),
        "{notes:#?}"
    );
    assert!(
        has(
            &notes,
            "failover.yaml: document 1: skipped Gateway gloo-system/failover-gateway"
        ),
        "{notes:#?}"
    );
    assert!(
        has(
            &notes,
            "(Upstream gloo-system/default-service-blue-10000): spec.kube.selector: not carried"
        ),
        "{notes:#?}"
    );

    // Blue fails over to green in another cluster: a scheme detour takes as it is.
    let model = validate(&imported).unwrap();
    let scheme = &model.schemes[0];
    assert_eq!(scheme.primary.service.authority(), "service-blue.default");
    assert_eq!(
        scheme.groups[0][0].target.service.authority(),
        "service-green.default"
    );
}

#[test]
fn targets_of_the_primarys_own_service_validate_with_weights_grpc_and_static_hosts() {
    let opts = with_gateways(&["east=10.0.1.1", "west=10.0.2.1", "south=10.0.3.1"]);
    let imported = import_fixture("same-service", &opts).unwrap();
    let model = validate(&imported).unwrap();
    assert_eq!((model.clusters.len(), model.schemes.len()), (3, 3));

    let foo = scheme(&imported, "foo");
    let weights: Vec<_> = foo.failover_groups[0]
        .priority_group
        .iter()
        .map(|t| (t.cluster.as_str(), t.weight))
        .collect();
    assert_eq!(weights, [("west", Some(3)), ("south", Some(1))]);
    let check = foo.health_check.as_ref().unwrap();
    assert_eq!(check.path.as_deref(), Some("/health"));
    // 2s is longer than the 1s interval: the timeout becomes the interval.
    assert_eq!(
        (check.interval.as_deref(), check.timeout.as_deref()),
        (Some("1s"), Some("1s"))
    );
    assert_eq!(
        (check.unhealthy_threshold, check.healthy_threshold),
        (Some(3), Some(2))
    );

    let bar = scheme(&imported, "bar");
    assert_eq!(bar.failover_groups.len(), 2);
    let check = bar.health_check.as_ref().unwrap();
    assert_eq!(
        check.grpc,
        Some(GrpcHealthCheckSpec {
            service_name: Some("bar.v1.Bar".into())
        })
    );
    assert_eq!(check.path, None);
    let south = cluster(&imported, "south");
    let bar_in_south = south.services.iter().find(|s| s.name == "bar").unwrap();
    assert_eq!(bar_in_south.protocol.as_deref(), Some("grpc"));
    assert_eq!(
        bar_in_south.endpoints,
        ["bar.apps.svc.south.example:9090"],
        "south's clusterDomain"
    );

    let legacy = scheme(&imported, "legacy");
    assert_eq!(
        legacy.health_check, None,
        "no check on the Upstream: detour's default"
    );
    let hosts = |c: &str| {
        let spec = cluster(&imported, c);
        spec.services
            .iter()
            .find(|s| s.name == "legacy")
            .unwrap()
            .endpoints
            .clone()
    };
    assert_eq!(hosts("east"), ["10.1.0.5:8080", "10.1.0.6:8080"]);
    assert_eq!(hosts("west"), ["legacy.west.internal:8080"]);
    assert!(
        !cluster(&imported, "south")
            .services
            .iter()
            .any(|s| s.name == "legacy")
    );

    let notes = notes(&imported);
    let upstreams = "upstreams.yaml: document 1 (Upstream gloo-system/apps-foo-8080): ";
    for needle in [
        format!("{upstreams}spec.sslConfig: not carried: "),
        format!("{upstreams}spec.outlierDetection: not carried: "),
        format!("{upstreams}spec.frobnicate: not carried: detour has no equivalent"),
        format!("{upstreams}spec.healthChecks[1]: not carried: a detour scheme has one health check"),
        format!("{upstreams}spec.healthChecks[0].timeout: longer than the interval"),
        format!("{upstreams}spec.healthChecks[0].httpHealthCheck.host: not carried"),
        format!("{upstreams}spec.healthChecks[0].noTrafficInterval: not carried"),
        "document 2 (Upstream gloo-system/apps-bar-9090): spec.healthChecks[0].grpcHealthCheck.authority: not carried".into(),
        "document 4 (Upstream gloo-system/legacy): spec.static.useTls: not carried".into(),
        "document 5 (Upstream gloo-system/apps-baz-80): not named by any FailoverScheme read: not imported".into(),
        "clusters.yaml: document 1 (KubernetesCluster gloo-system/south): items[2].spec.providerInfo: not carried".into(),
        "schemes.yaml: document 3 (FailoverScheme gloo-system/legacy): spec.primary: Upstream gloo-system/legacy has no healthChecks".into(),
    ] {
        assert!(has(&notes, &needle), "missing {needle:?} in {notes:#?}");
    }
    // The second check is reported whole, not field by field.
    assert!(!has(&notes, "healthChecks[1].tcpHealthCheck"), "{notes:#?}");
}

#[test]
fn check_timings_detour_cannot_keep_are_written_as_near_as_it_can() {
    let primary = |checks: &str| {
        format!(
            "{}---\napiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {{name: apps-foo-8080, namespace: gloo-system}}\nspec:\n  kube: {{serviceName: foo, serviceNamespace: apps, servicePort: 8080}}\n  healthChecks: [{{{checks}, httpHealthCheck: {{path: /health}}}}]\n",
            scheme_to("west", "apps-foo-8080")
        )
    };
    let opts = with_gateways(&["east=1.1.1.1", "west=1.1.1.2"]);
    for (checks, interval, timeout, note) in [
        (
            "interval: 5ms, timeout: 1ms",
            Some("100ms"),
            Some("1ms"),
            "interval: shorter than a detour controller allows by default (--min-health-check-interval): written as 100ms",
        ),
        (
            "interval: 2s, timeout: 0s",
            Some("2s"),
            Some("2s"),
            "timeout: 0:",
        ),
        (
            "interval: 200ms",
            Some("200ms"),
            Some("200ms"),
            "timeout: absent",
        ),
        (
            "timeout: 3s",
            None,
            Some("1000ms"),
            "timeout: longer than the interval",
        ),
    ] {
        let imported = import_text(&primary(checks), &opts).unwrap();
        let check = scheme(&imported, "foo").health_check.clone().unwrap();
        assert_eq!(
            (check.interval.as_deref(), check.timeout.as_deref()),
            (interval, timeout),
            "{checks}"
        );
        assert!(
            has(&notes(&imported), note),
            "{checks}: {:#?}",
            notes(&imported)
        );
        validate(&imported).unwrap();
    }
}

#[test]
fn a_target_upstreams_own_checks_are_reported_unused() {
    let target = "---\napiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {name: apps-foo-8080, namespace: gloo-system, clusterName: west}\nspec:\n  kube: {serviceName: foo, serviceNamespace: apps, servicePort: 8080}\n  healthChecks: [{timeout: 1s, interval: 1s, httpHealthCheck: {path: /ready, host: x}}]\n";
    let text = format!("{}{target}", scheme_to("west", "apps-foo-8080"));
    let imported = import_text(&text, &with_gateways(&["east=1.1.1.1", "west=1.1.1.2"])).unwrap();
    let notes = notes(&imported);
    assert!(
        has(
            &notes,
            "gloo.yaml: document 2 (Upstream gloo-system/apps-foo-8080): spec.healthChecks: not carried: a scheme is checked with its primary Upstream's checks"
        ),
        "{notes:#?}"
    );
    assert!(!has(&notes, "httpHealthCheck.host"), "{notes:#?}");
    // The primary (east) was read by its name: no check known, detour's default.
    assert_eq!(scheme(&imported, "foo").health_check, None);
}

#[test]
fn kubernetes_mode_lists_no_services_and_names_the_kubeconfig_secret() {
    let mut opts = with_gateways(&["east=10.0.1.1", "west=10.0.2.1", "south=10.0.3.1"]);
    opts.kubernetes = true;
    let imported = import_fixture("same-service", &opts).unwrap();
    let east = cluster(&imported, "east");
    assert!(east.services.is_empty());
    assert_eq!(
        east.kubeconfig_secret.as_ref().map(|s| s.name.as_str()),
        Some("east")
    );
    let notes = notes(&imported);
    assert!(
        has(
            &notes,
            "(Upstream gloo-system/legacy): spec.static.hosts: not carried: in Kubernetes mode"
        ),
        "{notes:#?}"
    );
    // The documents read as detour's (services are then discovered, not validated here).
    let (docs, problems) = parse_file("out.yaml", &output::to_yaml(&imported).unwrap());
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(docs.len(), 6);
}

#[test]
fn a_malformed_document_is_refused_with_file_document_and_field() {
    let opts = with_gateways(&["east=10.0.1.1", "west=10.0.2.1"]);
    let refused = refusals(import_fixture("malformed", &opts));
    let file = fixtures("malformed").join("scheme.yaml");
    assert_eq!(
        refused,
        [format!(
            "{}: document 1 (FailoverScheme gloo-system/foo): spec.failoverGroups[0].priorityGroup[0].localityWeight: expected a number from 0 to 4294967295, found the string \"heavy\"",
            file.display()
        )]
    );
}

#[test]
fn what_cannot_be_read_or_carried_is_refused_where_it_is() {
    let opts = with_gateways(&["east=10.0.1.1", "west=10.0.2.1"]);
    let cases: &[(String, &str)] = &[
        (
            SCHEME.replace("clusterName: east, ", ""),
            "gloo.yaml: document 1 (FailoverScheme gloo-system/foo): spec.primary.clusterName: required",
        ),
        (
            scheme_to("west", "legacy"),
            "spec.failoverGroups[0].priorityGroup[0].upstreams[0]: Upstream gloo-system/legacy (cluster west) is not among the documents read, and its name is not Gloo discovery's NAMESPACE-NAME-PORT",
        ),
        (
            scheme_to("west", "apps-foo-8080").replace(
                "    - cluster: west\n",
                "    - cluster: west\n      localityWeight: 0\n",
            ),
            "spec.failoverGroups[0].priorityGroup[0].localityWeight: 0 gives these upstreams no traffic",
        ),
        (
            format!(
                "{}---\napiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {{name: lambda, namespace: gloo-system}}\nspec:\n  aws: {{region: eu-west-1}}\n",
                scheme_to("west", "lambda")
            ),
            "(FailoverScheme gloo-system/foo): spec.failoverGroups[0].priorityGroup[0].upstreams[0]: Upstream gloo-system/lambda is of type `aws`",
        ),
        (
            format!(
                "{}---\napiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {{name: apps-foo-8080, namespace: gloo-system}}\nspec:\n  kube: {{serviceName: foo, serviceNamespace: apps, servicePort: 8080}}\n  healthChecks: [{{timeout: 1sec, interval: 1s, httpHealthCheck: {{path: /health}}}}]\n",
                scheme_to("west", "apps-foo-8080")
            ),
            "gloo.yaml: document 2 (Upstream gloo-system/apps-foo-8080): spec.healthChecks[0].timeout: invalid duration \"1sec\"",
        ),
        (
            format!(
                "{}---\napiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {{name: apps-foo-8080, namespace: gloo-system}}\nspec:\n  kube: {{serviceName: foo, serviceNamespace: apps, servicePort: 80800}}\n",
                scheme_to("west", "apps-foo-8080")
            ),
            "gloo.yaml: document 2 (Upstream gloo-system/apps-foo-8080): spec.kube.servicePort: 80800 is not a port",
        ),
        (
            scheme_to("west", "apps-foo-8080").replace("kind: FailoverScheme\n", ""),
            "gloo.yaml: document 1 (gloo-system/foo): kind: required",
        ),
        (
            format!(
                "{}---\napiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {{name: apps-foo-8080, namespace: gloo-system}}\nspec:\n  kube: {{serviceName: foo, serviceNamespace: apps, servicePort: 8080}}\n---\napiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {{name: foo-admin, namespace: gloo-system}}\nspec:\n  kube: {{serviceName: foo, serviceNamespace: apps, servicePort: 9090}}\n",
                scheme_to("west", "apps-foo-8080").replace(
                    "upstreams: [{name: apps-foo-8080, namespace: gloo-system}]",
                    "upstreams: [{name: apps-foo-8080, namespace: gloo-system}, {name: foo-admin, namespace: gloo-system}]"
                )
            ),
            "spec.failoverGroups[0].priorityGroup[0].upstreams[1]: Service apps/foo in cluster west is reached here by port 9090",
        ),
        (
            "{not: [valid".to_string(),
            "gloo.yaml: document 1: invalid YAML",
        ),
    ];
    for (text, needle) in cases {
        let refused = refusals(import_text(text, &opts));
        assert!(has(&refused, needle), "missing {needle:?} in {refused:#?}");
    }
}

#[test]
fn every_cluster_needs_its_gateway_and_every_gateway_a_cluster() {
    let text = scheme_to("west", "apps-foo-8080");
    let refused = refusals(import_text(&text, &with_gateways(&["east=10.0.1.1"])));
    assert_eq!(
        refused,
        [
            "--gateway: no gateway for cluster(s) west: add --gateway west=HOST:PORT (where the other clusters reach its east-west gateway; port 15443 when left out)"
        ]
    );
    let opts = with_gateways(&["east=10.0.1.1", "west=10.0.2.1", "wset=10.0.3.1"]);
    let refused = refusals(import_text(&text, &opts));
    assert!(
        has(
            &refused,
            "--gateway: wset: no KubernetesCluster or FailoverScheme read names this cluster (clusters: east, west)"
        ),
        "{refused:#?}"
    );
}

#[test]
fn two_gloo_schemes_that_would_meet_in_their_primaries_namespace_are_refused() {
    // Gloo keeps both in its own namespaces; detour writes each in apps, its primary's.
    let second = SCHEME
        .replace("namespace: gloo-system}\nspec", "namespace: team-b}\nspec")
        .replace("{{cluster}}", "south")
        .replace("{{upstream}}", "apps-foo-8080");
    let text = format!("{}---\n{second}", scheme_to("west", "apps-foo-8080"));
    let refused = refusals(import_text(
        &text,
        &with_gateways(&["east=1.1.1.1", "west=1.1.1.2", "south=1.1.1.3"]),
    ));
    assert!(
        has(
            &refused,
            "gloo.yaml: document 2 (FailoverScheme team-b/foo): metadata.name: gloo.yaml: document 1 (FailoverScheme gloo-system/foo) is also written as FailoverScheme apps/foo"
        ),
        "{refused:#?}"
    );
}

#[test]
fn an_upstream_defined_twice_for_one_cluster_is_refused() {
    let upstream = "---\napiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {name: apps-foo-8080, namespace: gloo-system}\nspec:\n  kube: {serviceName: foo, serviceNamespace: apps, servicePort: 8080}\n";
    let text = format!("{}{upstream}{upstream}", scheme_to("west", "apps-foo-8080"));
    let refused = refusals(import_text(
        &text,
        &with_gateways(&["east=1.1.1.1", "west=1.1.1.2"]),
    ));
    assert!(
        has(
            &refused,
            "gloo.yaml: document 3 (Upstream gloo-system/apps-foo-8080): metadata.name: Upstream gloo-system/apps-foo-8080 is already defined in gloo.yaml: document 2 (give each copy its metadata.clusterName)"
        ),
        "{refused:#?}"
    );
}

#[test]
fn the_yaml_stream_and_the_files_hold_the_same_documents() {
    let opts = with_gateways(&["local=10.0.1.1", "remote=10.0.2.1"]);
    let imported = import_fixture("guide", &opts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let written = output::write_dir(&imported, dir.path()).unwrap();
    let names: Vec<_> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "membercluster.local.yaml",
            "membercluster.remote.yaml",
            "failoverscheme.default.failover-scheme.yaml"
        ]
    );
    let joined: String = written
        .iter()
        .map(|p| format!("---\n{}", std::fs::read_to_string(p).unwrap()))
        .collect();
    assert_eq!(joined, output::to_yaml(&imported).unwrap());
}
