//! Issue 4: the harness runs as production would, with certificates from `detour certs
//! init`: failover traffic from east to west crosses a real mTLS connection between the
//! simulated clusters, and every table fetch is mTLS too. Plaintext stays possible.

use detour_e2e::certs::ClusterRole;
use detour_e2e::envoy::Envoy;
use detour_e2e::load::{Load, LoadSpec, summaries};
use detour_e2e::setup::Setup;
use detour_e2e::topology::{Topology, wait_served_by};
use detour_e2e::wait::{Probe, secs, wait_until};
use std::time::{Duration, Instant};

/// Long enough for anything this file waits for but a failover.
const PATIENCE: Duration = Duration::from_secs(10);

/// A counter of `envoy`, 0 when Envoy has not created it (no such traffic yet).
fn counter(envoy: &Envoy, name: &str) -> anyhow::Result<u64> {
    Ok(envoy.stat(name)?.unwrap_or(0))
}

/// `listener.<ip>_<port>.ssl.handshake`: TLS handshakes a listener completed.
fn listener_handshakes(envoy: &Envoy, addr: std::net::SocketAddr) -> anyhow::Result<u64> {
    counter(
        envoy,
        &format!("listener.{}_{}.ssl.handshake", addr.ip(), addr.port()),
    )
}

#[test]
fn failover_traffic_crosses_a_real_mtls_connection_between_clusters() {
    let mut t = Topology::start(
        "failover_traffic_crosses_a_real_mtls_connection_between_clusters",
        Setup::for_tests(),
    )
    .unwrap();
    assert!(t.certs().is_some(), "mTLS is the harness's default");
    let controller_log = std::fs::read_to_string(t.out().file("controller.log")).unwrap();
    assert!(
        controller_log.contains("serving the table API over mTLS"),
        "{controller_log}"
    );
    let west_gateway = t.layout().member("west").unwrap().gateway;
    let to_west = format!(
        "cluster.{}.ssl.handshake",
        t.setup().service.envoy_cluster("west")
    );
    let east = t.ingress("east").unwrap();

    // Every Envoy fetched its table over mTLS (the controller cluster's handshakes).
    for cluster in ["east", "west", "south"] {
        let envoy = t.envoy(cluster).unwrap();
        assert!(
            counter(envoy, "cluster.detour_controller.ssl.handshake").unwrap() > 0,
            "{cluster}'s Envoy fetched its table without a TLS handshake"
        );
    }
    // Before any failover east's Envoy has not talked to west's gateway at all.
    assert_eq!(counter(t.envoy("east").unwrap(), &to_west).unwrap(), 0);

    t.kill_upstream("east").unwrap();
    let reply = wait_served_by(&east, "west", t.setup().failover_bound()).unwrap();
    assert_eq!(reply.status, 200);

    // The answer came from west's foo, through west's gateway (which marks what it
    // forwards), over a connection east's Envoy opened with a TLS handshake, accepted
    // by west's gateway listener, which requires a client certificate.
    let crossed = t
        .upstream("west")
        .unwrap()
        .records()
        .unwrap()
        .into_iter()
        .filter(|r| r.via.as_deref() == Some("west"))
        .count();
    assert!(crossed > 0, "west's foo saw no request through its gateway");
    let east_handshakes = counter(t.envoy("east").unwrap(), &to_west).unwrap();
    assert!(
        east_handshakes > 0,
        "east's Envoy reached west's gateway without TLS ({to_west} = 0)"
    );
    let west_handshakes = listener_handshakes(t.envoy("west").unwrap(), west_gateway).unwrap();
    assert!(
        west_handshakes >= east_handshakes,
        "west's gateway listener completed {west_handshakes} handshakes, east's Envoy {east_handshakes}"
    );
    eprintln!(
        "east → west gateway: {east_handshakes} mTLS handshakes from east's Envoy; \
         west's gateway completed {west_handshakes} (health probes included)"
    );
}

#[test]
fn without_certificates_the_same_failover_runs_in_plaintext() {
    let setup = Setup {
        mtls: false,
        ..Setup::for_tests()
    };
    let mut t = Topology::start(
        "without_certificates_the_same_failover_runs_in_plaintext",
        setup,
    )
    .unwrap();
    assert!(t.certs().is_none());
    let east = t.ingress("east").unwrap();
    t.kill_upstream("east").unwrap();
    wait_served_by(&east, "west", t.setup().failover_bound()).unwrap();

    let west_gateway = t.layout().member("west").unwrap().gateway;
    let to_west = format!(
        "cluster.{}.ssl.handshake",
        t.setup().service.envoy_cluster("west")
    );
    assert_eq!(counter(t.envoy("east").unwrap(), &to_west).unwrap(), 0);
    assert_eq!(
        listener_handshakes(t.envoy("west").unwrap(), west_gateway).unwrap(),
        0
    );
    assert_eq!(
        counter(
            t.envoy("east").unwrap(),
            "cluster.detour_controller.ssl.handshake"
        )
        .unwrap(),
        0
    );
    // East's Envoy did open connections to west's gateway: zero handshakes means
    // plaintext, not no traffic (and the mTLS test above sees these names move).
    let upstream_cx = format!(
        "cluster.{}.upstream_cx_total",
        t.setup().service.envoy_cluster("west")
    );
    assert!(counter(t.envoy("east").unwrap(), &upstream_cx).unwrap() > 0);
}

/// The serial number of the certificate `file` (PEM), as openssl prints it.
fn serial_of_file(file: &std::path::Path) -> anyhow::Result<String> {
    openssl_serial(&format!(
        "openssl x509 -noout -serial -in '{}'",
        file.display()
    ))
}

/// The serial number of the certificate a new TLS handshake with `addr` is answered
/// with, presenting `client` (a client certificate the listener accepts).
fn serial_of_handshake(
    addr: std::net::SocketAddr,
    client: &detour_e2e::certs::Pair,
    ca: &std::path::Path,
) -> anyhow::Result<String> {
    openssl_serial(&format!(
        "openssl s_client -connect {addr} -cert '{}' -key '{}' -CAfile '{}' </dev/null \
         2>/dev/null | openssl x509 -noout -serial",
        client.cert.display(),
        client.key.display(),
        ca.display()
    ))
}

fn openssl_serial(script: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let serial = text
        .trim()
        .strip_prefix("serial=")
        .ok_or_else(|| anyhow::anyhow!("no serial from `{script}`: {text}"))?;
    Ok(serial.to_string())
}

/// Issue 17, rotation under traffic: Envoy reads its certificates from SDS files in a
/// watched directory, so `detour certs init` renewing west's gateway certificate and
/// east's client certificate while east's traffic crosses to west loses no request,
/// and the next handshake with west's gateway presents the new certificate, without
/// restarting any Envoy.
#[test]
fn renewed_certificates_reach_running_envoys_under_traffic() {
    let mut t = Topology::start(
        "renewed_certificates_reach_running_envoys_under_traffic",
        Setup::for_tests(),
    )
    .unwrap();
    let certs = t.certs().unwrap().clone();
    let west_gateway = t.layout().member("west").unwrap().gateway;
    let west_pair = certs.cluster("west", ClusterRole::Gateway);
    let east_pair = certs.cluster("east", ClusterRole::Envoy);
    let east = t.ingress("east").unwrap();
    t.kill_upstream("east").unwrap();
    wait_served_by(&east, "west", t.setup().failover_bound()).unwrap();
    let load = Load::start(&east, LoadSpec::steady_get("/", 4, 100)).unwrap();
    load.wait_completed_after(Instant::now(), 20, PATIENCE)
        .unwrap();
    let old_gateway = serial_of_file(&west_pair.cert).unwrap();
    let old_client = serial_of_file(&east_pair.cert).unwrap();
    assert_eq!(
        serial_of_handshake(west_gateway, &east_pair, &certs.ca()).unwrap(),
        old_gateway
    );
    let envoy_pids: Vec<Option<u32>> = ["east", "west"]
        .iter()
        .map(|c| t.envoy(c).unwrap().process().pid())
        .collect();

    // What `certs init` renews (a key gone stands for a certificate near expiry).
    std::fs::remove_file(&west_pair.key).unwrap();
    std::fs::remove_file(&east_pair.key).unwrap();
    let renewed = Instant::now();
    t.detour().certs_init(t.config_dir(), certs.root()).unwrap();
    let new_gateway = serial_of_file(&west_pair.cert).unwrap();
    let new_client = serial_of_file(&east_pair.cert).unwrap();
    assert_ne!(new_gateway, old_gateway);
    assert_ne!(new_client, old_client);

    wait_until(
        "west's gateway presents its renewed certificate",
        PATIENCE,
        || {
            let seen = serial_of_handshake(west_gateway, &east_pair, &certs.ca())?;
            Ok(if seen == new_gateway {
                Probe::Ready(())
            } else {
                Probe::NotYet(format!("serial {seen}"))
            })
        },
    )
    .unwrap();
    let presented = renewed.elapsed();
    // East's Envoy loaded its renewed client certificate (admin /certs lists what it
    // holds); its next connections to west present it.
    wait_until(
        "east's Envoy holds its renewed certificate",
        PATIENCE,
        || {
            let held = t.envoy("east")?.admin_get("/certs")?;
            Ok(
                if held.to_lowercase().contains(&new_client.to_lowercase()) {
                    Probe::Ready(())
                } else {
                    Probe::NotYet("old serial".into())
                },
            )
        },
    )
    .unwrap();
    load.wait_completed_after(Instant::now(), 50, PATIENCE)
        .unwrap();
    let report = load.stop().unwrap();
    eprintln!(
        "{} GETs {:?}; west's gateway presented the renewed certificate {} after the renewal",
        report.total(),
        report.by_cluster(),
        secs(presented)
    );
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "{} of {} failed across the renewal: {:#?}",
        failures.len(),
        report.total(),
        summaries(failures.iter().copied())
    );
    assert!(report.sent_between(renewed, Instant::now()).count() > 0);
    // No Envoy was restarted to get there.
    for (cluster, pid) in ["east", "west"].iter().zip(envoy_pids) {
        assert_eq!(t.envoy(cluster).unwrap().process().pid(), pid);
    }
}

/// Waits until `cluster`'s Envoy holds (admin `/certs`) a certificate with `serial`, or
/// no longer holds one when `held` is false.
fn wait_envoy_holds(
    t: &mut Topology,
    cluster: &str,
    serial: &str,
    held: bool,
) -> anyhow::Result<()> {
    let serial = serial.to_lowercase();
    wait_until(
        &format!("{cluster}'s Envoy holding {serial}: {held}"),
        PATIENCE,
        || {
            let certs = t.envoy(cluster)?.admin_get("/certs")?.to_lowercase();
            Ok(if certs.contains(&serial) == held {
                Probe::Ready(())
            } else {
                Probe::NotYet(format!("held: {}", !held))
            })
        },
    )
}

/// Issue 17, a change of CA with an overlap, under the same cross-cluster traffic: the
/// next CA is trusted everywhere first (`--ca-change begin`), then issues every
/// certificate (`switch`, the old CA still trusted), then the old one goes (`finish`).
/// No request fails, no Envoy restarts, and west's gateway ends up presenting a
/// certificate of the new CA.
#[test]
fn a_change_of_ca_with_an_overlap_loses_no_request() {
    let mut t = Topology::start(
        "a_change_of_ca_with_an_overlap_loses_no_request",
        Setup::for_tests(),
    )
    .unwrap();
    let certs = t.certs().unwrap().clone();
    let config = t.config_dir().to_path_buf();
    let west_gateway = t.layout().member("west").unwrap().gateway;
    let west_pair = certs.cluster("west", ClusterRole::Gateway);
    let east_pair = certs.cluster("east", ClusterRole::Envoy);
    let root = certs.root().to_path_buf();
    let east = t.ingress("east").unwrap();
    t.kill_upstream("east").unwrap();
    wait_served_by(&east, "west", t.setup().failover_bound()).unwrap();
    let load = Load::start(&east, LoadSpec::steady_get("/", 4, 100)).unwrap();
    load.wait_completed_after(Instant::now(), 20, PATIENCE)
        .unwrap();
    let started = Instant::now();
    let old_ca = serial_of_file(&certs.ca()).unwrap();
    let old_gateway = serial_of_file(&west_pair.cert).unwrap();
    let step = |t: &Topology, step: &str| {
        t.detour()
            .certs_init_with(&config, &root, &["--ca-change", step])
            .unwrap();
    };

    step(&t, "begin");
    let next_ca = serial_of_file(&root.join("ca-next.crt")).unwrap();
    for cluster in ["east", "west", "south"] {
        wait_envoy_holds(&mut t, cluster, &next_ca, true).unwrap();
    }
    load.wait_completed_after(Instant::now(), 20, PATIENCE)
        .unwrap();

    step(&t, "switch");
    assert_eq!(serial_of_file(&certs.ca()).unwrap(), next_ca);
    let new_gateway = serial_of_file(&west_pair.cert).unwrap();
    let new_client = serial_of_file(&east_pair.cert).unwrap();
    assert_ne!(new_gateway, old_gateway);
    wait_until(
        "west's gateway presents its new CA's certificate",
        PATIENCE,
        || {
            let seen = serial_of_handshake(west_gateway, &east_pair, &root.join("trust.crt"))?;
            Ok(if seen == new_gateway {
                Probe::Ready(())
            } else {
                Probe::NotYet(format!("serial {seen}"))
            })
        },
    )
    .unwrap();
    wait_envoy_holds(&mut t, "east", &new_client, true).unwrap();
    load.wait_completed_after(Instant::now(), 20, PATIENCE)
        .unwrap();

    step(&t, "finish");
    for cluster in ["east", "west", "south"] {
        wait_envoy_holds(&mut t, cluster, &old_ca, false).unwrap();
    }
    load.wait_completed_after(Instant::now(), 50, PATIENCE)
        .unwrap();
    // The tables still come, from a controller whose certificate the new CA issued.
    t.wait_filter_current("east").unwrap();
    let report = load.stop().unwrap();
    eprintln!(
        "{} GETs {:?} across the change of CA ({})",
        report.total(),
        report.by_cluster(),
        secs(started.elapsed())
    );
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "{} of {} failed across the change of CA: {:#?}",
        failures.len(),
        report.total(),
        summaries(failures.iter().copied())
    );
}
