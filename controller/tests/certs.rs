//! `detour certs init` as users run it: the layout, the key modes, what a second run
//! keeps and what it renews, and that nothing secret is printed.
// Test code: a failed unwrap is a failed test; `foo` is the example service's name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_names
)]

mod common;
use common::tls::files_under;
use common::*;
use detour_core::pki::identity::{ClusterRole, Identity};
use std::path::{Path, PathBuf};

fn init(config: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "certs",
        "init",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    detour(&args)
}

/// The lines of the report that are not "kept".
fn changed(out: &std::process::Output) -> Vec<String> {
    stdout(out)
        .lines()
        .filter(|l| {
            ["ca.crt", "clusters/", "controller/"]
                .iter()
                .any(|p| l.starts_with(p))
                && !l.contains(" kept: ")
        })
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn certs_init_writes_the_layout_and_renews_only_what_changed() {
    let (clusters, foo) = example_files();
    let config = ConfigDir::new(&[("clusters.yaml", &clusters), ("foo.yaml", &foo)]);
    let out = tempfile::tempdir().unwrap();

    let first = init(
        config.path(),
        out.path(),
        &["--controller-san", "detour.example.com"],
    );
    assert!(first.status.success(), "{}", stderr(&first));
    let mut want: Vec<PathBuf> = vec!["ca.crt".into(), "ca.key".into(), "trust.crt".into()];
    for c in ["east", "south", "west"] {
        for role in ["envoy", "gateway", "table"] {
            for ext in ["crt", "key"] {
                want.push(format!("clusters/{c}/{role}.{ext}").into());
            }
        }
    }
    // What each kind of Envoy mounts (SDS): the gateway's key apart from the clients'.
    for c in ["east", "south", "west"] {
        for file in [
            "gateway/ca",
            "gateway/gateway",
            "client/ca",
            "client/envoy",
            "client/table",
        ] {
            want.push(format!("clusters/{c}/sds/{file}.json").into());
        }
    }
    for role in ["probe", "server"] {
        for ext in ["crt", "key"] {
            want.push(format!("controller/{role}.{ext}").into());
        }
    }
    want.sort();
    // `..data` and the `..VERSION` it points to are how a mount is swapped, not files
    // anyone names.
    let listed: Vec<PathBuf> = files_under(out.path())
        .into_iter()
        .filter(|f| {
            !f.components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with(".."))
        })
        .collect();
    assert_eq!(listed, want);
    #[cfg(unix)]
    for f in &want {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.path().join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        // SDS files hold keys.
        let expected = if ["key", "json"].contains(&f.extension().unwrap().to_str().unwrap()) {
            0o600
        } else {
            0o644
        };
        assert_eq!(mode, expected, "{}", f.display());
    }
    let text = stdout(&first);
    assert!(
        text.contains("12 certificate(s) created or renewed, 0 kept"),
        "{text}"
    );
    assert!(
        text.contains("controller/server.crt")
            && text.contains("DNS:detour.example.com, URI:spiffe://detour.dev/controller/server"),
        "{text}"
    );
    assert!(!text.contains("BEGIN") && !stderr(&first).contains("BEGIN"));

    // Each certificate names its owner.
    let gateway = std::fs::read(out.path().join("clusters/west/gateway.crt")).unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&gateway).unwrap();
    assert_eq!(
        Identity::of_certificate(&der),
        Some(Identity::cluster("west", ClusterRole::Gateway))
    );

    // Again: nothing to do.
    let again = init(
        config.path(),
        out.path(),
        &["--controller-san", "detour.example.com"],
    );
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("0 certificate(s) created or renewed, 12 kept"));
    assert_eq!(changed(&again), Vec::<String>::new());

    // West's gateway moves, a key goes missing, the controller keeps its default names:
    // exactly those three are renewed, the CA stays.
    let ca = std::fs::read(out.path().join("ca.crt")).unwrap();
    config.write(
        "clusters.yaml",
        &clusters.replace("{address: 127.0.2.1,", "{address: 127.0.2.99,"),
    );
    std::fs::remove_file(out.path().join("clusters/south/envoy.key")).unwrap();
    let third = init(config.path(), out.path(), &[]);
    assert!(third.status.success(), "{}", stderr(&third));
    assert_eq!(
        changed(&third),
        [
            "clusters/south/envoy.crt renewed",
            "clusters/west/gateway.crt renewed",
            "controller/server.crt renewed",
        ],
        "{}",
        stdout(&third)
    );
    assert!(stdout(&third).contains("names changed from [IP:127.0.2.1, "));
    assert_eq!(std::fs::read(out.path().join("ca.crt")).unwrap(), ca);
}

#[test]
fn certs_init_refuses_an_invalid_config_and_a_broken_ca() {
    let config = ConfigDir::new(&[("bad.yaml", "kind: Nonsense\n")]);
    let out = tempfile::tempdir().unwrap();
    let o = init(config.path(), out.path(), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(files_under(out.path()).is_empty());

    let (clusters, foo) = example_files();
    let config = ConfigDir::new(&[("clusters.yaml", &clusters), ("foo.yaml", &foo)]);
    assert!(init(config.path(), out.path(), &[]).status.success());
    std::fs::write(out.path().join("ca.key"), "not a key\n").unwrap();
    let o = init(config.path(), out.path(), &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "{}: the CA private key cannot be used",
            out.path().join("ca.key").display()
        )),
        "{err}"
    );
}

use rustls::pki_types::pem::PemObject;
