//! HTTP requests as a user of the gateway sends them: to a member cluster's ingress,
//! with `Host` naming the service (`foo.apps`). Each reply says which cluster answered
//! (the upstream's `x-served-by`) and why detour answered itself (`x-detour-reason`).

use crate::runtime::block_on;
use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request as HttpRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::ClientConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Header the upstream server names its cluster in.
pub const SERVED_BY: &str = "x-served-by";
/// Header the harness tags every request with, recorded by the upstream that got it.
pub const TEST_ID: &str = "x-test-id";
/// Header detour's filter explains its own 503s with.
pub const DETOUR_REASON: &str = "x-detour-reason";

/// One request, before it is aimed at an ingress.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Request {
    pub fn get(path: &str) -> Request {
        Request::new(Method::GET, path)
    }

    pub fn post(path: &str, body: impl Into<Bytes>) -> Request {
        Request::new(Method::POST, path).body(body)
    }

    pub fn new(method: Method, path: &str) -> Request {
        Request {
            method,
            path: path.to_string(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Request {
        self.body = body.into();
        self
    }
}

/// A complete answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub latency: Duration,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The member cluster whose upstream answered; `None` when no upstream did
    /// (Envoy's or the filter's own error answer).
    pub fn served_by(&self) -> Option<&str> {
        self.header(SERVED_BY)
    }

    /// Why detour's filter answered this request itself.
    pub fn detour_reason(&self) -> Option<&str> {
        self.header(DETOUR_REASON)
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// One line for logs and assertion messages: `200 from west` or `503 (reason: ...)`.
    pub fn summary(&self) -> String {
        match (self.served_by(), self.detour_reason()) {
            (Some(cluster), _) => format!("{} from {cluster}", self.status),
            (None, Some(reason)) => format!("{} (x-detour-reason: {reason})", self.status),
            (None, None) => {
                let body: String = self.body_text().chars().take(120).collect();
                format!("{} from no upstream: {body:?}", self.status)
            }
        }
    }
}

/// A keep-alive HTTP/1.1 client for one address, sending a fixed `Host`; plain, or
/// over TLS with a client certificate ([`HttpClient::with_tls`]).
#[derive(Clone)]
pub struct HttpClient {
    addr: SocketAddr,
    authority: String,
    timeout: Duration,
    tls: Option<Arc<ClientConfig>>,
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
}

impl HttpClient {
    /// `authority` is the `Host` sent (e.g. `foo.apps`); requests go to `addr`.
    pub fn new(addr: SocketAddr, authority: &str) -> HttpClient {
        HttpClient {
            addr,
            authority: authority.to_string(),
            timeout: Duration::from_secs(10),
            tls: None,
            inner: Inner::new(None, true),
        }
    }

    /// The same client speaking HTTPS: `tls` says which servers to trust (the server
    /// must name `addr`'s IP) and which certificate to present.
    pub fn with_tls(mut self, tls: ClientConfig) -> HttpClient {
        let tls = Arc::new(tls);
        self.inner = Inner::new(Some(tls.clone()), true);
        self.tls = Some(tls);
        self
    }

    /// Opens a new connection for every request. Envoy gives each connection to one of
    /// its workers, so requests on fresh connections reach all of them, not just the
    /// worker that owns one kept-alive connection.
    pub fn without_keep_alive(mut self) -> HttpClient {
        self.inner = Inner::new(self.tls.clone(), false);
        self
    }

    /// Give up on a request after this long (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> HttpClient {
        self.timeout = timeout;
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Sends `request` and waits for the whole answer (blocking).
    pub fn send(&self, request: Request) -> Result<Reply> {
        block_on(self.send_async(request))?
    }

    pub fn get(&self, path: &str) -> Result<Reply> {
        self.send(Request::get(path))
    }

    /// The async form, for the load generator and other code on the harness runtime.
    /// An `Err` is a transport failure: refused, reset, or no answer within the timeout.
    pub async fn send_async(&self, request: Request) -> Result<Reply> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let uri = format!("{scheme}://{}{}", self.addr, request.path);
        let mut http = HttpRequest::builder()
            .method(request.method.clone())
            .uri(&uri)
            .body(Full::new(request.body.clone()))
            .with_context(|| format!("building request {} {uri}", request.method))?;
        let headers = http.headers_mut();
        headers.insert(
            hyper::header::HOST,
            HeaderValue::from_str(&self.authority).context("Host header")?,
        );
        for (name, value) in &request.headers {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).context("header name")?,
                HeaderValue::from_str(value).context("header value")?,
            );
        }
        let started = Instant::now();
        let exchange = async {
            let response = match &self.inner {
                Inner::Plain(client) => client.request(http).await?,
                Inner::Tls(client) => client.request(http).await?,
            };
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| anyhow!("no answer within {:?}", self.timeout))?
            .with_context(|| {
                format!("{} {uri} (Host: {}) failed", request.method, self.authority)
            })?;
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            latency: started.elapsed(),
        })
    }
}

impl Inner {
    fn new(tls: Option<Arc<ClientConfig>>, keep_alive: bool) -> Inner {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let mut builder = Client::builder(TokioExecutor::new());
        // Every failure must reach the test: no silent resend on a closed keep-alive
        // connection.
        builder
            .retry_canceled_requests(false)
            .pool_idle_timeout(Duration::from_secs(30));
        if !keep_alive {
            builder.pool_max_idle_per_host(0);
        }
        match tls {
            None => Inner::Plain(builder.build(connector)),
            Some(tls) => {
                // The TLS layer takes https URLs; the TCP connector must let them through.
                connector.enforce_http(false);
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config((*tls).clone())
                    .https_only()
                    .enable_http1()
                    .wrap_connector(connector);
                Inner::Tls(builder.build(connector))
            }
        }
    }
}
