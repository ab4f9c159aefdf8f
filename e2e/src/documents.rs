//! The config directory `detour serve --config DIR` reads: one `MemberCluster` per
//! member and the `FailoverScheme`, in the exact shape of DESIGN.md, one document per
//! file so a test can edit one of them (hot reload) without touching the others.

use crate::layout::{Layout, MemberAddrs};
use crate::setup::{Protocol, Setup};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Writes every document into `dir` (created if missing); returns the files written.
pub fn write_config(dir: &Path, setup: &Setup, layout: &Layout) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut documents: Vec<(String, String)> = layout
        .members
        .iter()
        .map(|m| (format!("member-{}.yaml", m.name), member_cluster(setup, m)))
        .collect();
    documents.push((
        format!(
            "scheme-{}-{}.yaml",
            setup.service.namespace, setup.service.name
        ),
        failover_scheme(setup),
    ));
    documents
        .into_iter()
        .map(|(file, text)| {
            let path = dir.join(file);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        })
        .collect()
}

/// The `MemberCluster` of one member: its gateway (`address`, or `addresses` when it
/// has several instances) and its one service's endpoints ([`Setup::service_in`]).
pub fn member_cluster(setup: &Setup, member: &MemberAddrs) -> String {
    let service = setup.service_in(&member.name);
    let gateway = match member.gateways.as_slice() {
        [_, _, ..] => format!(
            "addresses: [{}]",
            member
                .gateways
                .iter()
                .map(|g| g.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => format!("address: {}", member.gateway.ip()),
    };
    let endpoints = member
        .services
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    // The default protocol is left out, as an operator would.
    let protocol = match setup.protocol {
        Protocol::Http => String::new(),
        other => format!("protocol: {}, ", other.as_str()),
    };
    format!(
        "apiVersion: detour.dev/v1alpha1
kind: MemberCluster
metadata: {{name: {name}}}
spec:
  gateway: {{{gateway}, port: {gw_port}}}
  services:
  - {{name: {svc}, namespace: {ns}, port: {port}, {protocol}endpoints: [{endpoints}]}}
",
        name = member.name,
        gw_port = member.gateway.port(),
        svc = service.name,
        ns = service.namespace,
        port = member.service.port(),
    )
}

/// The one `FailoverScheme`: the primary, its failover groups in order, and timings.
pub fn failover_scheme(setup: &Setup) -> String {
    failover_scheme_named(setup, &setup.service.name)
}

/// `setup`'s scheme under another name (`metadata.name`): one more scheme for the same
/// service, e.g. with another primary (a cluster may be the primary of one scheme per
/// service).
pub fn failover_scheme_named(setup: &Setup, scheme: &str) -> String {
    let service = &setup.service;
    let mut groups = String::new();
    for group in &setup.failover_groups {
        groups.push_str("  - priorityGroup:\n");
        for cluster in group {
            // The service that cluster runs: the primary's, or another one.
            let target = setup.service_in(cluster);
            // `write!` to a String cannot fail.
            let _ = writeln!(
                groups,
                "    - {{cluster: {cluster}, services: [{{name: {}, namespace: {}}}], weight: {}}}",
                target.name,
                target.namespace,
                setup.weight_of(cluster)
            );
        }
    }
    let health = &setup.health;
    // A gRPC service is checked the gRPC way (the whole server's status), others by path.
    let check = match setup.protocol {
        Protocol::Grpc => "grpc: {serviceName: \"\"}".to_string(),
        Protocol::Http | Protocol::Http2 => format!("path: {}", health.path),
    };
    let per_try_timeout = setup
        .replay
        .per_try_timeout
        .map(|t| format!(", perTryTimeout: {}", duration(t)))
        .unwrap_or_default();
    format!(
        "apiVersion: detour.dev/v1alpha1
kind: FailoverScheme
metadata: {{name: {scheme}, namespace: {ns}}}
spec:
  primary: {{cluster: {primary}, name: {name}, namespace: {ns}}}
  failoverGroups:
{groups}  healthCheck: {{{check}, interval: {interval}, timeout: {timeout},
                unhealthyThreshold: {unhealthy}, healthyThreshold: {healthy}}}
  failback: {{stableFor: {stable_for}}}
  replay: {{methods: [{methods}], maxBodyBytes: {max_body}{per_try_timeout}}}
",
        name = service.name,
        ns = service.namespace,
        primary = setup.primary,
        interval = duration(health.interval),
        timeout = duration(health.timeout),
        unhealthy = health.unhealthy_threshold,
        healthy = health.healthy_threshold,
        stable_for = duration(setup.stable_for),
        methods = setup.replay.methods.join(", "),
        max_body = setup.replay.max_body_bytes,
    )
}

/// A duration as operators write it: `1s`, `1500ms`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::MemberAddrs;

    /// West with one gateway instance and one service instance.
    fn west() -> MemberAddrs {
        MemberAddrs {
            name: "west".into(),
            ingress: "127.0.2.1:20001".parse().unwrap(),
            gateway: "127.0.2.1:15443".parse().unwrap(),
            admin: "127.0.2.1:20002".parse().unwrap(),
            service: "127.0.2.10:8080".parse().unwrap(),
            services: vec!["127.0.2.10:8080".parse().unwrap()],
            gateways: vec!["127.0.2.1:15443".parse().unwrap()],
            gateway_envoys: Vec::new(),
        }
    }

    #[test]
    fn documents_have_the_shape_of_the_design() {
        let setup = Setup::for_tests();
        assert_eq!(
            member_cluster(&setup, &west()),
            r#"apiVersion: detour.dev/v1alpha1
kind: MemberCluster
metadata: {name: west}
spec:
  gateway: {address: 127.0.2.1, port: 15443}
  services:
  - {name: foo, namespace: apps, port: 8080, endpoints: ["127.0.2.10:8080"]}
"#
        );
        assert_eq!(
            failover_scheme(&setup),
            r#"apiVersion: detour.dev/v1alpha1
kind: FailoverScheme
metadata: {name: foo, namespace: apps}
spec:
  primary: {cluster: east, name: foo, namespace: apps}
  failoverGroups:
  - priorityGroup:
    - {cluster: west, services: [{name: foo, namespace: apps}], weight: 1}
  - priorityGroup:
    - {cluster: south, services: [{name: foo, namespace: apps}], weight: 1}
  healthCheck: {path: /healthz, interval: 200ms, timeout: 200ms,
                unhealthyThreshold: 2, healthyThreshold: 2}
  failback: {stableFor: 2s}
  replay: {methods: [GET, HEAD, OPTIONS, PUT, DELETE], maxBodyBytes: 65536}
"#
        );
    }

    #[test]
    fn several_instances_and_gateways_are_listed() {
        let mut setup = Setup::for_tests();
        setup.replay.per_try_timeout = Some(Duration::from_millis(500));
        let west = MemberAddrs {
            services: vec![
                "127.0.2.10:8080".parse().unwrap(),
                "127.0.2.11:8081".parse().unwrap(),
            ],
            gateways: vec![
                "127.0.2.1:15443".parse().unwrap(),
                "127.0.2.2:15443".parse().unwrap(),
            ],
            ..west()
        };
        let member = member_cluster(&setup, &west);
        assert!(
            member.contains("gateway: {addresses: [127.0.2.1, 127.0.2.2], port: 15443}"),
            "{member}"
        );
        assert!(
            member.contains(r#"endpoints: ["127.0.2.10:8080", "127.0.2.11:8081"]"#),
            "{member}"
        );
        assert!(failover_scheme(&setup).contains("maxBodyBytes: 65536, perTryTimeout: 500ms}"));
    }

    #[test]
    fn a_grpc_service_is_declared_and_checked_as_such() {
        let setup = Setup {
            protocol: Protocol::Grpc,
            replay: crate::setup::Replay {
                per_try_timeout: Some(Duration::from_millis(300)),
                ..Setup::for_tests().replay
            },
            ..Setup::for_tests()
        };
        assert!(member_cluster(&setup, &west()).contains(
            r#"- {name: foo, namespace: apps, port: 8080, protocol: grpc, endpoints: ["127.0.2.10:8080"]}"#
        ));
        let scheme = failover_scheme(&setup);
        assert!(scheme.contains(r#"healthCheck: {grpc: {serviceName: ""}, interval: 200ms"#));
        assert!(scheme.contains("maxBodyBytes: 65536, perTryTimeout: 300ms}"));
    }

    #[test]
    fn weighted_targets_and_another_service_are_written_per_cluster() {
        let setup = Setup {
            service: crate::setup::Service::new("apps", "blue"),
            services: [("west".into(), crate::setup::Service::new("web", "green"))].into(),
            failover_groups: vec![vec!["west".into(), "south".into()]],
            weights: [("west".into(), 3)].into(),
            ..Setup::for_tests()
        };
        assert!(member_cluster(&setup, &west()).contains(
            r#"- {name: green, namespace: web, port: 8080, endpoints: ["127.0.2.10:8080"]}"#
        ));
        let scheme = failover_scheme(&setup);
        assert!(
            scheme.contains(
                "  primary: {cluster: east, name: blue, namespace: apps}
  failoverGroups:
  - priorityGroup:
    - {cluster: west, services: [{name: green, namespace: web}], weight: 3}
    - {cluster: south, services: [{name: blue, namespace: apps}], weight: 1}
  healthCheck:"
            ),
            "{scheme}"
        );
    }

    #[test]
    fn durations_are_written_as_operators_write_them() {
        assert_eq!(duration(Duration::from_secs(3)), "3s");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration(Duration::from_millis(200)), "200ms");
    }
}
