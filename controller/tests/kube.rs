//! The Kubernetes-facing commands through the real binary: `detour crds` prints exactly
//! the checked-in CRDs, `detour cluster register` prints YAML, and `serve --kubernetes`
//! without a cluster fails at start with the reason.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_names
)]

mod common;
use common::*;
use serde::Deserialize;
use std::path::Path;
use std::process::Command;

#[test]
fn crds_prints_the_checked_in_manifests() {
    let out = detour(&["crds"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds");
    let files: Vec<String> = [
        "failoverschemes.detour.dev.yaml",
        "memberclusters.detour.dev.yaml",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(dir.join(f)).unwrap())
    .collect();
    assert!(
        stdout(&out) == files.join("---\n"),
        "manifests/crds/ drifted from `detour crds`: run `make crds` and commit"
    );
    let kinds: Vec<String> = serde_norway::Deserializer::from_str(&stdout(&out))
        .map(|d| serde_json::Value::deserialize(d).unwrap()["spec"]["names"]["kind"].to_string())
        .collect();
    assert_eq!(kinds, ["\"FailoverScheme\"", "\"MemberCluster\""]);
}

#[test]
fn crds_out_writes_one_file_per_crd() {
    let dir = tempfile::tempdir().unwrap();
    let out = detour(&["crds", "--out", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 2);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn cluster_register_prints_yaml_to_apply() {
    let out = detour(&[
        "cluster",
        "register",
        "--name",
        "west",
        "--gateway",
        "10.0.2.1:15443",
        "--server",
        "https://west:6443",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let docs: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 9);
    let mc = docs.last().unwrap();
    assert_eq!(
        mc["spec"]["gateway"],
        serde_json::json!({"address": "10.0.2.1", "port": 15443})
    );
    assert!(text.contains("# === Apply in member cluster west"));
    assert!(text.contains("# === Apply in the management cluster"));

    let out = detour(&[
        "cluster",
        "register",
        "--name",
        "west",
        "--gateway",
        "0.0.0.0",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("listening address"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn serve_kubernetes_without_a_cluster_fails_at_start() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--kubernetes", "--listen", "127.0.0.1:0"])
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("missing-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("error: starting the Kubernetes source"),
        "{err}"
    );

    let out = detour(&["serve"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--config"), "{}", stderr(&out));
    let out = detour(&["serve", "--kubernetes", "--config", "x"]);
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
}
