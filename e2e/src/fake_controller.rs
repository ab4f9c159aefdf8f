//! A stand-in for the controller's table API that serves whatever a test tells it to —
//! a valid table, garbage, an oversized body, an error — so tests can check that the
//! filter keeps its last good table (fail static). Runs inside the test process.
//!
//! It honours the protocol the filter speaks: `ETag`, `If-None-Match` → 304, and
//! `?wait=` long-polls until the served answer changes; over mTLS it presents the
//! controller's certificate and requires a client certificate from the federation CA,
//! so an mTLS Envoy fetches from it as from the real one.

use crate::certs::Certs;
use crate::runtime::runtime;
use anyhow::{Context, Result};
use bytes::Bytes;
use detour_filter::duration::parse_duration;
use detour_filter::table::wire::TableDoc;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// Longest a long-poll is held, whatever `?wait=` asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// One answer the fake gives to every table request.
#[derive(Debug, Clone)]
pub struct Served {
    pub status: u16,
    pub etag: String,
    pub body: Bytes,
}

struct State {
    served: watch::Sender<Served>,
    requests: AtomicU64,
}

pub struct FakeController {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl FakeController {
    /// Listens on `addr` (a topology's `layout().controller` with
    /// `ControllerKind::External`; see `Topology::start_fake_controller`), over mTLS
    /// with the controller's certificate when `certs` is given. Until told otherwise it
    /// answers 503.
    pub fn start(addr: SocketAddr, certs: Option<&Certs>) -> Result<FakeController> {
        let tls = certs
            .map(|c| c.server_config(&c.controller_server()))
            .transpose()?
            .map(|config| TlsAcceptor::from(Arc::new(config)));
        let rt = runtime()?;
        let listener = rt
            .block_on(TcpListener::bind(addr))
            .with_context(|| format!("fake controller binding {addr}"))?;
        let (served, _) = watch::channel(Served {
            status: 503,
            etag: "\"none\"".into(),
            body: Bytes::from_static(b"{\"error\":\"fake controller: nothing to serve yet\"}"),
        });
        let state = Arc::new(State {
            served,
            requests: AtomicU64::new(0),
        });
        let accepting = state.clone();
        let accept = rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = accepting.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve_connection(stream, state).await,
                        // A refused handshake ends this connection only.
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                serve_connection(stream, state).await
                            }
                        }
                    }
                });
            }
        });
        Ok(FakeController {
            addr,
            state,
            accept,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `table` as the real controller would (200, `ETag` = its version).
    pub fn serve_table(&self, table: &TableDoc) -> Result<()> {
        let body = serde_json::to_vec(table).context("serialising the table")?;
        self.serve(Served {
            status: 200,
            etag: format!("\"{}\"", table.version),
            body: Bytes::from(body),
        });
        Ok(())
    }

    /// Serves anything: malformed JSON, a huge body, a 500…
    pub fn serve(&self, served: Served) {
        self.state.served.send_replace(served);
    }

    /// Table requests received so far (long-polls count once each).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }
}

impl Drop for FakeController {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve_connection(
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    state: Arc<State>,
) {
    let service = service_fn(move |request| answer(state.clone(), request));
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn answer(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let mut changes = state.served.subscribe();
    let known = request
        .headers()
        .get(hyper::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let wait = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("wait="))
        .and_then(|w| parse_duration(w).ok())
        .map(|w| w.min(MAX_WAIT));

    let current = changes.borrow_and_update().clone();
    let unchanged = known.as_deref() == Some(current.etag.as_str());
    let served = match (unchanged, wait) {
        (true, Some(wait)) => {
            // Long-poll: answer when the served answer changes, or 304 at the deadline.
            match tokio::time::timeout(wait, changes.changed()).await {
                Ok(Ok(())) => Some(changes.borrow().clone()),
                _ => None,
            }
        }
        (true, None) => None,
        (false, _) => Some(current),
    };
    let response = match served {
        Some(s) if known.as_deref() != Some(s.etag.as_str()) => Response::builder()
            .status(StatusCode::from_u16(s.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header(hyper::header::ETAG, s.etag)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(s.body)),
        _ => Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .body(Full::new(Bytes::new())),
    };
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}
