//! `detour import gloo` as users run it: Gloo Federation documents in, detour documents
//! out that `detour check` accepts; a document it cannot read refused with file,
//! document and field, and nothing written.
// Test code: a failed unwrap is a failed test; `foo` is the shared helpers' example service.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_names
)]

mod common;
use common::*;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn fixtures(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gloo")
        .join(dir)
}

/// Runs `detour ARGS...` with `input` on its standard input.
fn detour_with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn imports_a_directory_into_files_that_detour_check_accepts() {
    let from = fixtures("same-service");
    let out = ConfigDir::new(&[]);
    let dir = out.file("detour");
    let run = detour(&[
        "import",
        "gloo",
        "--from",
        from.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--gateway",
        "east=127.0.1.1",
        "--gateway",
        "west=127.0.2.1:15443",
        "--gateway",
        "south=gateway.south.example",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        stdout(&run).lines().count(),
        6,
        "one file per document:\n{}",
        stdout(&run)
    );
    let err = stderr(&run);
    assert!(
        err.contains("upstreams.yaml: document 1 (Upstream gloo-system/apps-foo-8080): spec.sslConfig: not carried: "),
        "{err}"
    );
    assert!(
        err.contains("imported 3 MemberCluster(s) and 3 FailoverScheme(s)"),
        "{err}"
    );

    let check = detour(&["check", "--config", dir.to_str().unwrap()]);
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(
        stdout(&check).ends_with("OK (3 member clusters, 3 failover schemes)\n"),
        "{}",
        stdout(&check)
    );
}

#[test]
fn reads_standard_input_and_writes_one_stream() {
    let guide = ["clusters.yaml", "upstream-blue.yaml", "failover.yaml"]
        .iter()
        .map(|f| std::fs::read_to_string(fixtures("guide").join(f)).unwrap())
        .collect::<Vec<_>>()
        .join("---\n");
    let run = detour_with_stdin(
        &[
            "import",
            "gloo",
            "--from",
            "-",
            "--gateway",
            "local=127.0.1.1",
            "--gateway",
            "remote=127.0.2.1",
        ],
        &guide,
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let yaml = stdout(&run);
    assert_eq!(yaml.matches("\nkind: ").count(), 3, "{yaml}");
    assert!(yaml.contains("name: service-green"), "{yaml}");
    assert!(
        stderr(&run).contains("<stdin>: document 5 (FailoverScheme gloo-system/failover-scheme): spec.failoverGroups[0].priorityGroup[0].upstreams[0]: Upstream gloo-system/default-service-green-10000 (cluster remote) is not among the documents read: taken as Service default/service-green port 10000"),
        "{}",
        stderr(&run)
    );

    // `detour check` on it: blue fails over to green in the other cluster.
    let config = ConfigDir::new(&[("imported.yaml", &yaml)]);
    let check = detour(&["check", "--config", config.str()]);
    assert!(check.status.success(), "{}", stderr(&check));
}

#[test]
fn refuses_a_malformed_document_and_writes_nothing() {
    let from = fixtures("malformed");
    let out = ConfigDir::new(&[]);
    let dir = out.file("detour");
    let run = detour(&[
        "import",
        "gloo",
        "--from",
        from.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--gateway",
        "east=127.0.1.1",
        "--gateway",
        "west=127.0.2.1",
    ]);
    assert_eq!(run.status.code(), Some(1));
    let err = stderr(&run);
    let expected = format!(
        "{}: document 1 (FailoverScheme gloo-system/foo): spec.failoverGroups[0].priorityGroup[0].localityWeight: expected a number",
        from.join("scheme.yaml").display()
    );
    assert!(err.starts_with(&expected), "expected {expected}\ngot {err}");
    assert!(
        err.ends_with("1 problem(s) found: nothing written\n"),
        "{err}"
    );
    assert!(!dir.exists());
}

#[test]
fn a_cluster_without_a_gateway_is_an_error() {
    let from = fixtures("guide");
    let run = detour(&[
        "import",
        "gloo",
        "--from",
        from.to_str().unwrap(),
        "--gateway",
        "local=127.0.1.1",
    ]);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        stderr(&run).starts_with(
            "--gateway: no gateway for cluster(s) remote: add --gateway remote=HOST:PORT"
        ),
        "{}",
        stderr(&run)
    );
    assert_eq!(stdout(&run), "");
}
