//! Slow and idle clients against `detour serve` as a process: hundreds of idle TCP
//! connections and slow-header (slowloris) clients on both listeners leave the table API
//! and `/healthz` answering, and each of them is closed after the header-read timeout;
//! long-polls and event streams over their caps are answered 503 with the reason.
// Test code: a failed unwrap is a failed test; `foo` is the example service's name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_names
)]

mod common;
use common::*;
use detour::client::HttpClient;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn controller(args: &[&str]) -> (Controller, [FakeGateway; 3], ConfigDir) {
    let gateways = three_gateways().await;
    let config = example_config(&gateways, 100, "0s");
    let mut all = vec!["--ops-listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let c = Controller::start_with(config.path(), &all).await;
    // Tables are published once every target has its first verdict.
    c.wait_ready().await;
    (c, gateways, config)
}

/// GET `url`: status and body, within `limit`.
async fn get(url: &str, headers: &[(&str, &str)], limit: Duration) -> (u16, String) {
    let client = HttpClient::fresh_connections();
    let (resp, body) = client
        .get_body(url, headers, limit, 1 << 22)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (
        resp.status().as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Whether the server closes `stream` within `limit` (whatever it sends first).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// A client sending a request head one header line every 200 ms, never finishing it;
/// true when the server closed the connection within `limit`.
async fn slowloris(addr: SocketAddr, limit: Duration) -> bool {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: detour\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if s.write_all(format!("x-slow-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            return true;
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_header_clients_leave_the_table_api_and_healthz_answering_and_are_closed() {
    let (c, _gateways, _config) = controller(&[
        "--header-read-timeout",
        "1s",
        "--idle-timeout",
        "5s",
        "--max-wait",
        "2s",
    ])
    .await;
    // 300 idle connections on each listener, and 50 slow-header clients on each.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(c.addr).await.unwrap());
        idle.push(TcpStream::connect(c.ops).await.unwrap());
    }
    let slow: Vec<_> = (0..50)
        .flat_map(|_| [c.addr, c.ops])
        .map(|addr| tokio::spawn(slowloris(addr, Duration::from_secs(6))))
        .collect();

    // Meanwhile the table API and /healthz answer at once.
    let tables = format!("http://{}/v1/tables/east", c.addr);
    let healthz = format!("http://{}/healthz", c.ops);
    for _ in 0..3 {
        let start = Instant::now();
        assert_eq!(get(&tables, &[], Duration::from_secs(2)).await.0, 200);
        assert_eq!(get(&healthz, &[], Duration::from_secs(2)).await.0, 200);
        assert!(start.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Each idle connection is closed once the header-read timeout (1s) has passed...
    for (i, stream) in idle.iter_mut().enumerate() {
        assert!(
            closed_within(stream, Duration::from_secs(4)).await,
            "idle connection {i} still open"
        );
    }
    // ... and so is each slow-header client, though it keeps sending.
    for (i, slow) in slow.into_iter().enumerate() {
        assert!(slow.await.unwrap(), "slow-header client {i} still open");
    }
    assert_eq!(get(&tables, &[], Duration::from_secs(2)).await.0, 200);
    assert_eq!(get(&healthz, &[], Duration::from_secs(2)).await.0, 200);
}

/// Opens a request and leaves it open (the answer unread).
async fn hold(addr: SocketAddr, path: &str, headers: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: detour\r\n{headers}\r\n").as_bytes())
        .await
        .unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_and_event_streams_over_their_caps_get_503_with_the_reason() {
    let (c, _gateways, _config) =
        controller(&["--max-long-polls", "2", "--max-status-watchers", "2"]).await;
    let tables = format!("http://{}/v1/tables/east", c.addr);
    let version = c.get("/v1/tables/east", None).await.etag.unwrap();
    let if_none_match = format!("If-None-Match: \"{version}\"\r\n");

    // Two long-polls wait (the table does not change: the gateways stay healthy).
    let _waiting = [
        hold(c.addr, "/v1/tables/east?wait=60s", &if_none_match).await,
        hold(c.addr, "/v1/tables/east?wait=60s", &if_none_match).await,
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.metrics().await.contains("detour_long_polls_in_flight 2") {
        assert!(
            Instant::now() < deadline,
            "the two long-polls are not waiting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The third is refused at once, saying why.
    let quoted = format!("\"{version}\"");
    let (status, body) = get(
        &format!("{tables}?wait=60s"),
        &[("if-none-match", &quoted)],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too many table long-polls") && body.contains("--max-long-polls"));
    // Plain table requests and /healthz still answer.
    assert_eq!(get(&tables, &[], Duration::from_secs(2)).await.0, 200);
    let healthz = format!("http://{}/healthz", c.ops);
    assert_eq!(get(&healthz, &[], Duration::from_secs(2)).await.0, 200);

    // Two event streams open; the third is refused, saying why.
    let events = format!("http://{}/v1/status/events", c.ops);
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut s = hold(c.ops, "/v1/status/events", "").await;
        let mut seen = Vec::new();
        let mut buf = [0u8; 8192];
        while !String::from_utf8_lossy(&seen).contains("event: status") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "event stream closed");
            seen.extend_from_slice(&buf[..n]);
        }
        streams.push(s);
    }
    let (status, body) = get(&events, &[], Duration::from_secs(5)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too many status watchers") && body.contains("--max-status-watchers"));
    assert_eq!(get(&healthz, &[], Duration::from_secs(2)).await.0, 200);

    // A stream that ends gives its place back.
    drop(streams.pop());
    let client = HttpClient::fresh_connections();
    let mut accepted = false;
    for _ in 0..50 {
        let status_of = client
            .get_body(
                &format!("http://{}/v1/status?wait=1s", c.ops),
                &[("if-none-match", "*")],
                Duration::from_secs(5),
                1 << 22,
            )
            .await
            .unwrap()
            .0
            .status()
            .as_u16();
        if status_of == 304 {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted, "the freed slot was never given back");
}
