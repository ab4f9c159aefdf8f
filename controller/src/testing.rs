//! Fixtures shared by unit tests.

#![allow(dead_code)] // shared with the integration tests, which use other parts

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A stand-in HTTP server (an east-west gateway, or a service behind a real one):
/// answers every path with a settable status and its name as the body, remembers the
/// request headers it saw, and can be stopped and started again on the same port.
pub struct FakeGateway {
    pub addr: SocketAddr,
    pub status: Arc<AtomicU16>,
    pub delay_ms: Arc<AtomicU64>,
    /// Every request so far: the client's address (one per connection) and headers.
    pub seen: Arc<Mutex<Vec<(SocketAddr, HeaderMap)>>>,
    name: &'static str,
    task: Option<(JoinHandle<()>, tokio::sync::oneshot::Sender<()>)>,
}

#[derive(Clone)]
struct GatewayState {
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<(SocketAddr, HeaderMap)>>>,
    name: &'static str,
}

async fn answer(
    State(s): State<GatewayState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    s.seen.lock().unwrap().push((peer, headers));
    let delay = s.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = StatusCode::from_u16(s.status.load(Ordering::Relaxed)).unwrap();
    (status, s.name.to_string())
}

impl FakeGateway {
    pub async fn start() -> FakeGateway {
        FakeGateway::named("ok").await
    }

    /// A server that answers with `name` as the body.
    pub async fn named(name: &'static str) -> FakeGateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut g = FakeGateway {
            addr: listener.local_addr().unwrap(),
            status: Arc::new(AtomicU16::new(200)),
            delay_ms: Arc::new(AtomicU64::new(0)),
            seen: Arc::default(),
            name,
            task: None,
        };
        g.serve(listener);
        g
    }

    /// The `Host` header of every request so far.
    pub fn hosts(&self) -> Vec<String> {
        self.header_values("host")
    }

    /// How many connections the requests so far came on.
    pub fn connections(&self) -> usize {
        let seen = self.seen.lock().unwrap();
        let peers: std::collections::BTreeSet<_> = seen.iter().map(|(peer, _)| peer).collect();
        peers.len()
    }

    /// The values of header `name` in every request so far ("" when absent).
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, h)| {
                h.get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }

    fn serve(&mut self, listener: TcpListener) {
        let state = GatewayState {
            status: self.status.clone(),
            delay_ms: self.delay_ms.clone(),
            seen: self.seen.clone(),
            name: self.name,
        };
        let app = Router::new().fallback(answer).with_state(state);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        self.task = Some((task, stop));
    }

    /// Answers 503 from now on, as a gateway does when its service behind it is down
    /// (`fail_service(false)`: 200 again).
    pub fn fail_service(&self, failing: bool) {
        let status = if failing { 503 } else { 200 };
        self.status.store(status, Ordering::Relaxed);
    }

    /// Closes the listening socket and every connection, as a dying process would:
    /// connections are refused from now on.
    pub async fn stop(&mut self) {
        if let Some((task, stop)) = self.task.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        if let Some((task, _)) = self.task.take() {
            task.abort();
        }
    }
}

/// Polls `condition` every 5ms until it holds; panics with `what` after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
