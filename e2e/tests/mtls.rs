//! Issue 4: the harness runs as production would, with certificates from `detour certs
//! init`: failover traffic from east to west crosses a real mTLS connection between the
//! simulated clusters, and every table fetch is mTLS too. Plaintext stays possible.

use detour_e2e::envoy::Envoy;
use detour_e2e::setup::Setup;
use detour_e2e::topology::{Topology, wait_served_by};

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
