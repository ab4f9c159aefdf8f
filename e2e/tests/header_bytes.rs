//! A header value need not be UTF-8 (HTTP allows obs-text, and Envoy passes it on). One
//! such request must neither stop the filter (a panic kills the worker's VM, and every
//! later request on that worker fails) nor change where requests go.

use detour_e2e::setup::Setup;
use detour_e2e::topology::Topology;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Sends one GET with `x-name: caf<0xE9>` on a fresh connection (so requests reach
/// both workers); returns the status line and headers.
fn latin1_request(ingress: SocketAddr, host: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(ingress)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nx-name: caf").into_bytes();
    request.extend_from_slice(b"\xe9\r\nConnection: close\r\n\r\n");
    stream.write_all(&request)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    Ok(text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string())
}

#[test]
fn a_header_that_is_not_utf8_neither_stops_the_filter_nor_moves_the_request() {
    let mut t = Topology::start(
        "a_header_that_is_not_utf8_neither_stops_the_filter_nor_moves_the_request",
        Setup::for_tests(),
    )
    .unwrap();
    let host = t.setup().service.authority();
    let ingress = t.layout().member("east").unwrap().ingress;
    for _ in 0..20 {
        let head = latin1_request(ingress, &host).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("x-served-by: east"), "{head}");
    }
    // Every worker's VM still routes: plain requests on fresh connections fail over.
    t.kill_upstream("east").unwrap();
    let east = t.ingress("east").unwrap().without_keep_alive();
    detour_e2e::topology::wait_served_by(&east, "west", t.setup().failover_bound()).unwrap();
    for _ in 0..20 {
        let reply = east.get("/").unwrap();
        assert_eq!(reply.served_by(), Some("west"), "{}", reply.summary());
    }
    let log = std::fs::read_to_string(t.envoy("east").unwrap().process().log_path()).unwrap();
    assert!(!log.contains("panicked"), "the filter panicked:\n{log}");
}
