//! A member cluster's simulated service for detour's e2e tests and demo.
//!
//! `upstream --cluster east --service apps/foo --listen 127.0.1.10:8080 --record FILE
//!  [--fail-health-if FILE]`
//!
//! Every request gets 200 with a JSON body naming the cluster and service and the header
//! `x-served-by: <cluster>`; `/healthz` answers 200 and is not recorded — or 503 while
//! the `--fail-health-if` file exists (after as many milliseconds as the file says, if
//! it holds a number), so a test can make health checks fail while traffic is still
//! served (a table change that passive detection cannot cause). Every other
//! request is appended to FILE (one JSON line, written before the answer) so a test can
//! count deliveries even after this process is SIGKILLed.
//!
//! Query parameters: `delay_ms=N` holds the answer N ms (a request in flight when the
//! process is killed), `size=N` pads the answer to at least N bytes, `echo` answers
//! with the request body instead of JSON, `download=N` answers with N bytes of
//! [`download_byte`] (a large answer the client can check byte by byte), `reset_in=C`
//! drops the connection without an answer after reading and recording the body when
//! this is cluster C (an instance that failed after the request reached it), `status=N`
//! answers with that status instead of 200, and `gateway_flags=F` adds
//! `x-detour-gateway-flags: F` to the answer: a service (or a proxy behind it) forging a
//! detour gateway's failure marks, which detour must not believe.
//!
//! It speaks HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on the same port, as
//! `protocol: http2` services do, and `GET /ws` with `Upgrade: websocket` becomes a
//! WebSocket that echoes every message. A request with `content-type: application/grpc`
//! gets a gRPC answer: its own message echoed in one frame, then the trailer
//! `grpc-status: 0` (the bench's gRPC load; not recorded, as `make bench` sends many).

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use detour_e2e::client::{SERVED_BY, TEST_ID};
use detour_e2e::upstream::{Answer, HEALTH_PATH, Record, WEBSOCKET_PATH, download_byte};
use detour_filter::config::GATEWAY_FLAGS_HEADER;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

struct Args {
    cluster: String,
    service: String,
    listen: SocketAddr,
    record: PathBuf,
    fail_health_if: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let (mut cluster, mut service, mut listen, mut record) = (None, None, None, None);
    let mut fail_health_if = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--cluster" => cluster = Some(value),
            "--service" => service = Some(value),
            "--listen" => {
                listen = Some(value.parse().with_context(|| format!("--listen {value}"))?)
            }
            "--record" => record = Some(PathBuf::from(value)),
            "--fail-health-if" => fail_health_if = Some(PathBuf::from(value)),
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok(Args {
        cluster: cluster.context("--cluster is required")?,
        service: service.context("--service is required")?,
        listen: listen.context("--listen is required")?,
        record: record.context("--record is required")?,
        fail_health_if,
    })
}

struct Server {
    cluster: String,
    service: String,
    /// Appends go straight to the file (no buffer), one `write` per line.
    record: Mutex<File>,
    fail_health_if: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let record = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.record)
        .with_context(|| format!("opening {}", args.record.display()))?;
    let server = Arc::new(Server {
        cluster: args.cluster,
        service: args.service,
        record: Mutex::new(record),
        fail_health_if: args.fail_health_if,
    });
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    eprintln!(
        "upstream {} of {} listening on {}",
        server.service, server.cluster, args.listen
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let server = server.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| serve(server.clone(), request));
            // A client hanging up mid-request is not this server's failure.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Body = BoxBody<Bytes, std::convert::Infallible>;

async fn serve(server: Arc<Server>, request: Request<Incoming>) -> Result<Response<Body>> {
    let is_grpc = request
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if is_grpc {
        return grpc_echo(&server, request).await;
    }
    Ok(handle(server, request).await?.map(BodyExt::boxed))
}

/// A unary gRPC answer: the request's framed message back, then `grpc-status: 0`.
async fn grpc_echo(server: &Server, request: Request<Incoming>) -> Result<Response<Body>> {
    let message = request.into_body().collect().await?.to_bytes();
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
    let frames: [Result<Frame<Bytes>, std::convert::Infallible>; 2] =
        [Ok(Frame::data(message)), Ok(Frame::trailers(trailers))];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    Ok(Response::builder()
        .header(SERVED_BY, &server.cluster)
        .header("content-type", "application/grpc")
        .body(BodyExt::boxed(body))?)
}

async fn handle(
    server: Arc<Server>,
    mut request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>> {
    if request.uri().path() == WEBSOCKET_PATH {
        return websocket(&server, &mut request);
    }
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path_and_query().map_or_else(
        || parts.uri.path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let builder = Response::builder().header(SERVED_BY, &server.cluster);
    if parts.uri.path() == HEALTH_PATH {
        if let Some(path) = server.fail_health_if.as_deref().filter(|p| p.exists()) {
            // A number of milliseconds in the file holds the answer that long: a check
            // that takes its time to fail.
            let hold = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            if let Some(ms) = hold {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            return Ok(builder
                .status(503)
                .body(Full::new(Bytes::from_static(b"failing on purpose\n")))?);
        }
        return Ok(builder.body(Full::new(Bytes::from_static(b"ok\n")))?);
    }

    let record = Record {
        method: parts.method.to_string(),
        path: path.clone(),
        test_id: header(TEST_ID),
        via: header("x-detour-via"),
        authority: authority(&parts.uri, &parts.headers),
        body_bytes: body.len() as u64,
    };
    server.append(&record)?;

    let query = parts.uri.query().unwrap_or("");
    if query_value(query, "reset_in") == Some(server.cluster.as_str()) {
        // An error from the service makes hyper drop the connection unanswered.
        bail!("dropping the connection after the body, as asked");
    }
    let mut builder = builder;
    if let Some(status) = query_value(query, "status").and_then(|v| v.parse::<u16>().ok()) {
        builder = builder.status(status);
    }
    if let Some(flags) = query_value(query, "gateway_flags") {
        builder = builder.header(GATEWAY_FLAGS_HEADER, flags);
    }
    if let Some(ms) = query_value(query, "delay_ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if query_value(query, "echo").is_some() {
        return Ok(builder.body(Full::new(body))?);
    }
    if let Some(n) = query_value(query, "download").and_then(|v| v.parse::<u64>().ok()) {
        let bytes: Vec<u8> = (0..n).map(download_byte).collect();
        return Ok(builder
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(bytes)))?);
    }
    let answer = Answer {
        cluster: server.cluster.clone(),
        service: server.service.clone(),
        method: record.method,
        path,
        test_id: record.test_id,
        body_bytes: record.body_bytes,
    };
    let mut json = serde_json::to_vec(&answer)?;
    if let Some(size) = query_value(query, "size").and_then(|v| v.parse::<usize>().ok()) {
        json.resize(json.len().max(size), b' ');
    }
    json.push(b'\n');
    Ok(builder
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json)))?)
}

/// Answers a WebSocket handshake with 101 and echoes every message on the upgraded
/// connection; anything else at this path gets 400.
fn websocket(server: &Server, request: &mut Request<Incoming>) -> Result<Response<Full<Bytes>>> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let builder = Response::builder().header(SERVED_BY, &server.cluster);
    let key = header("sec-websocket-key");
    let is_upgrade = header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let Some(key) = key.filter(|_| is_upgrade) else {
        return Ok(builder
            .status(StatusCode::BAD_REQUEST)
            .body(Full::new(Bytes::from_static(
                b"a WebSocket handshake, please\n",
            )))?);
    };
    server.append(&Record {
        method: request.method().to_string(),
        path: request.uri().path().to_string(),
        test_id: header(TEST_ID),
        via: header("x-detour-via"),
        authority: authority(request.uri(), request.headers()),
        body_bytes: 0,
    })?;
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                break;
            }
        }
    });
    Ok(builder
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .body(Full::new(Bytes::new()))?)
}

impl Server {
    fn append(&self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        let mut file = self
            .record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        file.write_all(&line)
            .context("appending to the record file")
    }
}

/// The authority a request came with: HTTP/2's `:authority` (in the URI), else the
/// `Host` header of HTTP/1.1.
fn authority(uri: &hyper::Uri, headers: &hyper::HeaderMap) -> Option<String> {
    uri.authority().map(|a| a.as_str().to_string()).or_else(|| {
        headers
            .get(hyper::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
}

/// The value of `key` in a query string (`""` for a bare `key`).
fn query_value<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}
