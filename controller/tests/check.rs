//! `detour check` refuses each kind of mistake with file, document and field path, and
//! exits non-zero; a valid directory passes.
// Test code: a failed unwrap is a failed test; `foo` is the example service's name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_names
)]

mod common;
use common::*;

/// Runs `detour check` on the example with `edit` applied to foo.yaml or clusters.yaml;
/// returns (exit code, stderr).
fn check_edited(file: &str, from: &str, to: &str) -> (i32, String, ConfigDir) {
    let (clusters, foo) = example_files();
    let (clusters, foo) = match file {
        "clusters.yaml" => {
            assert!(clusters.contains(from), "{from:?}");
            (clusters.replacen(from, to, 1), foo)
        }
        _ => {
            assert!(foo.contains(from), "{from:?}");
            (clusters, foo.replacen(from, to, 1))
        }
    };
    let dir = ConfigDir::new(&[("clusters.yaml", &clusters), ("foo.yaml", &foo)]);
    let out = detour(&["check", "--config", dir.str()]);
    (out.status.code().unwrap_or(-1), stderr(&out), dir)
}

/// The refusal names the file, document, subject and field, and nothing else is wrong.
fn assert_refused(file: &str, from: &str, to: &str, document: &str, rest: &str) {
    assert_refused_in(file, from, to, file, document, rest);
}

/// Like [`assert_refused`] when the edit in `file` is reported in `reported`.
fn assert_refused_in(file: &str, from: &str, to: &str, reported: &str, document: &str, rest: &str) {
    let (code, err, dir) = check_edited(file, from, to);
    assert_eq!(code, 1, "{err}");
    let expected = format!("{}: {document}: {rest}", dir.file(reported).display());
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with(&expected),
        "expected a line starting with\n  {expected}\ngot\n{err}"
    );
    assert_eq!(lines.len(), 2, "one problem and the summary:\n{err}");
    assert!(lines[1].ends_with(": 1 problem(s) found"), "{err}");
}

const FOO: &str = "document 1 (FailoverScheme apps/foo)";

#[test]
fn the_example_passes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config");
    let out = detour(&["check", "--config", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).ends_with("OK (3 member clusters, 1 failover schemes)\n"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn refuses_an_unknown_field() {
    assert_refused(
        "foo.yaml",
        "maxBodyBytes: 65536}",
        "maxBodyBytes: 65536, maxBodyByte: 1}",
        FOO,
        "spec.replay.maxBodyByte: unknown field `maxBodyByte`, expected one of `methods`, `maxBodyBytes`, `perTryTimeout` (line 16, column",
    );
}

#[test]
fn refuses_an_unknown_cluster() {
    assert_refused(
        "foo.yaml",
        "- {cluster: south,",
        "- {cluster: nowhere,",
        FOO,
        "spec.failoverGroups[1].priorityGroup[0].cluster: unknown cluster \"nowhere\" (MemberClusters: east, south, west)",
    );
}

#[test]
fn refuses_an_unknown_service() {
    assert_refused_in(
        "clusters.yaml",
        "{name: foo, namespace: apps, port: 8080, endpoints: [\"127.0.2.10:8080\"]}",
        "{name: bar, namespace: apps, port: 8080, endpoints: [\"127.0.2.10:8080\"]}",
        "foo.yaml",
        FOO,
        "spec.failoverGroups[0].priorityGroup[0].services[0]: unknown service apps/foo in cluster \"west\" (its MemberCluster declares: apps/bar)",
    );
}

#[test]
fn refuses_a_scheme_that_fails_over_to_itself() {
    assert_refused(
        "foo.yaml",
        "- {cluster: south,",
        "- {cluster: east,",
        FOO,
        "spec.failoverGroups[1].priorityGroup[0].services[0]: fails over to itself: apps/foo in cluster east is the primary",
    );
}

#[test]
fn refuses_two_schemes_for_one_primary() {
    let (_, foo) = example_files();
    let start = foo.find("apiVersion").unwrap();
    let second = foo[start..].replace(
        "{name: foo, namespace: apps}\nspec",
        "{name: foo-again, namespace: apps}\nspec",
    );
    let (code, err, dir) = check_edited("foo.yaml", "65536}\n", &format!("65536}}\n---\n{second}"));
    assert_eq!(code, 1);
    let file = dir.file("foo.yaml");
    assert!(
        err.starts_with(&format!(
            "{}: document 2 (FailoverScheme apps/foo-again): spec.primary: apps/foo in cluster east is already the primary of FailoverScheme apps/foo ({}: document 1); one primary has one scheme",
            file.display(),
            file.display()
        )),
        "{err}"
    );
}

#[test]
fn refuses_bad_durations() {
    assert_refused(
        "foo.yaml",
        "interval: 1s",
        "interval: 1sec",
        FOO,
        "spec.healthCheck.interval: invalid duration \"1sec\": unknown unit",
    );
    assert_refused(
        "foo.yaml",
        "stableFor: 10s",
        "stableFor: \"10\"",
        FOO,
        "spec.failback.stableFor: invalid duration \"10\": missing unit",
    );
}

#[test]
fn refuses_what_else_users_get_wrong() {
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        (
            "foo.yaml",
            "apiVersion: detour.dev/v1alpha1",
            "apiVersion: detour.dev/v1",
            FOO,
            "apiVersion: \"detour.dev/v1\" is not \"detour.dev/v1alpha1\"",
        ),
        (
            "foo.yaml",
            "kind: FailoverScheme",
            "kind: Failover",
            "document 1",
            "kind: unknown kind \"Failover\"",
        ),
        (
            "foo.yaml",
            "primary: {cluster: east, name: foo, namespace: apps}",
            "primary: {cluster: east, name: foo}",
            FOO,
            "spec.primary: missing field `namespace`",
        ),
        (
            "foo.yaml",
            "unhealthyThreshold: 2",
            "unhealthyThreshold: 0",
            FOO,
            "spec.healthCheck.unhealthyThreshold: must be at least 1",
        ),
        (
            "foo.yaml",
            "healthyThreshold: 2}",
            "healthyThreshold: -1}",
            FOO,
            "spec.healthCheck.healthyThreshold: invalid value: integer `-1`, expected u32",
        ),
        (
            "foo.yaml",
            "  - priorityGroup:\n    - {cluster: south, services: [{name: foo, namespace: apps}]}",
            "  - priorityGroup: []",
            FOO,
            "spec.failoverGroups[1].priorityGroup: a priority group needs at least one target",
        ),
        (
            "clusters.yaml",
            "address: 127.0.2.1",
            "address: 127.0.2",
            "document 2 (MemberCluster west)",
            "spec.gateway.address: \"127.0.2\" is neither an IP address nor a DNS name",
        ),
        (
            "clusters.yaml",
            "\"127.0.3.10:8080\"",
            "\"127.0.3.10:http\"",
            "document 3 (MemberCluster south)",
            "spec.services[0].endpoints[0]: \"127.0.3.10:http\": the port must be a number from 1 to 65535",
        ),
    ];
    for (file, from, to, document, rest) in cases {
        assert_refused(file, from, to, document, rest);
    }
}

#[test]
fn refuses_a_bad_protocol_and_a_check_that_is_both_http_and_grpc() {
    assert_refused(
        "clusters.yaml",
        "port: 8080, endpoints: [\"127.0.2.10:8080\"]",
        "port: 8080, protocol: tcp, endpoints: [\"127.0.2.10:8080\"]",
        "document 2 (MemberCluster west)",
        "spec.services[0].protocol: \"tcp\" is not a protocol detour knows (http, http2, grpc)",
    );
    assert_refused(
        "foo.yaml",
        "healthCheck: {path: /healthz,",
        "healthCheck: {path: /healthz, grpc: {},",
        FOO,
        "spec.healthCheck.grpc: a check is either an HTTP GET of `path` or a gRPC `grpc` check, not both",
    );
    assert_refused(
        "foo.yaml",
        "healthCheck: {path: /healthz,",
        "healthCheck: {grpc: {service: foo},",
        FOO,
        "spec.healthCheck.grpc.service: unknown field `service`, expected `serviceName`",
    );
    // Each alone passes.
    let (code, err, _) = check_edited(
        "clusters.yaml",
        "port: 8080, endpoints: [\"127.0.2.10:8080\"]",
        "port: 8080, protocol: grpc, endpoints: [\"127.0.2.10:8080\"]",
    );
    assert_eq!(code, 0, "{err}");
    let (code, err, _) = check_edited(
        "foo.yaml",
        "healthCheck: {path: /healthz,",
        "healthCheck: {grpc: {serviceName: \"\"},",
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn refuses_duplicate_names() {
    let (code, err, dir) = check_edited(
        "clusters.yaml",
        "metadata: {name: south}",
        "metadata: {name: west}",
    );
    assert_eq!(code, 1);
    let file = dir.file("clusters.yaml");
    assert!(
        err.starts_with(&format!(
            "{}: document 3 (MemberCluster west): metadata.name: MemberCluster \"west\" is already defined in {}: document 2\n",
            file.display(),
            file.display()
        )),
        "{err}"
    );
    // ...and south, which the scheme names, is now missing.
    assert!(err.contains("unknown cluster \"south\""), "{err}");
}

#[test]
fn reports_every_problem_in_one_run() {
    let (clusters, foo) = example_files();
    let foo = foo
        .replace("interval: 1s", "interval: 1 s")
        .replace("- {cluster: west,", "- {cluster: wset,")
        .replace("maxBodyBytes: 65536}", "maxBodyBytes: 65536, retries: 3}");
    let clusters = clusters.replace(
        "port: 8080, endpoints: [\"127.0.1.10:8080\"]",
        "port: 0, endpoints: [\"127.0.1.10:8080\"]",
    );
    let dir = ConfigDir::new(&[("clusters.yaml", &clusters), ("foo.yaml", &foo)]);
    let out = detour(&["check", "--config", dir.str()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for needle in [
        "clusters.yaml: document 1 (MemberCluster east): spec.services[0].port: must be from 1 to 65535",
        "foo.yaml: document 1 (FailoverScheme apps/foo): spec.replay.retries: unknown field `retries`",
        "foo.yaml: document 1 (FailoverScheme apps/foo): spec.failoverGroups[0].priorityGroup[0].cluster: unknown cluster \"wset\"",
        "foo.yaml: document 1 (FailoverScheme apps/foo): spec.healthCheck.interval: invalid duration \"1 s\"",
        // East's own problem is enough: the scheme's reference to east is not blamed.
        ": 4 problem(s) found",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in\n{err}");
    }
}

#[test]
fn refuses_broken_yaml_and_empty_directories() {
    let dir = ConfigDir::new(&[("bad.yaml", "kind: [unclosed\n")]);
    let out = detour(&["check", "--config", dir.str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!(
            "{}: document 1: invalid YAML: ",
            dir.file("bad.yaml").display()
        )),
        "{}",
        stderr(&out)
    );
    let empty = ConfigDir::new(&[]);
    let out = detour(&["check", "--config", empty.str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no *.yaml or *.yml files"));
    let out = detour(&["check", "--config", "/nonexistent/detour"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read the config directory"));
}

#[test]
fn a_scheme_reaching_into_another_namespace_passes_only_with_the_controllers_allow_list() {
    let (code, err, dir) = check_edited(
        "foo.yaml",
        "metadata: {name: foo, namespace: apps}",
        "metadata: {name: foo, namespace: team-b}",
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("(FailoverScheme team-b/foo): spec.primary.namespace: the primary is in namespace \"apps\""),
        "{err}"
    );
    let allowed = detour(&[
        "check",
        "--config",
        dir.str(),
        "--allow-cross-namespace",
        "team-b=apps",
    ]);
    assert!(allowed.status.success(), "{}", stderr(&allowed));
}

#[test]
fn replay_bodies_over_the_controllers_bound_are_refused_and_the_bound_is_a_flag() {
    let (code, err, dir) = check_edited("foo.yaml", "maxBodyBytes: 65536", "maxBodyBytes: 2000000");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "spec.replay.maxBodyBytes: 2000000 is over the controller's limit of 1048576 bytes"
        ),
        "{err}"
    );
    let raised = detour(&[
        "check",
        "--config",
        dir.str(),
        "--max-replay-body-bytes",
        "4000000",
    ]);
    assert!(raised.status.success(), "{}", stderr(&raised));
}
