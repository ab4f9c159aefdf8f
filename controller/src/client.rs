//! The controller's HTTP client (health probes, `explain --controller`): HTTP/1.1 over
//! hyper, plain or over rustls with a client certificate (see [`crate::tls::client`]);
//! and HTTP/2 to a gateway for gRPC health checks (h2c with prior knowledge in
//! plaintext, h2 chosen by ALPN over TLS).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::header::HeaderMap;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {0:?}")]
    Url(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Http(String),
}

#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Inner,
    http2: Http2,
}

#[derive(Clone, Debug)]
enum Inner {
    Plain(Client<HttpConnector, Empty<Bytes>>),
    /// `https://` URLs over rustls; `http://` ones stay plain.
    Tls(Client<HttpsConnector<HttpConnector>, Empty<Bytes>>),
}

/// Whether a client's requests to one server share connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connections {
    /// A new connection for every request (one-off calls of the CLI).
    Fresh,
    /// Idle connections are kept and reused, as Envoy's own health checker and its
    /// traffic to a gateway do: thousands of checks a second through a few gateways
    /// would otherwise be thousands of TCP (and TLS) handshakes a second. A gateway
    /// that dies still fails the next check: its connections are reset with it, and a
    /// new one is refused.
    Reused,
}

/// Idle connections kept per server. Checks spread over their interval need only a few
/// at a time; more are opened when a burst needs them (e.g. checks that fell due
/// together while the controller was busy) and closed again when they come back, so a
/// burst does not leave thousands of idle connections (and their buffers) behind.
const MAX_IDLE_PER_SERVER: usize = 16;

impl Connections {
    /// A hyper client over `connector` that keeps idle connections as `self` says.
    fn client<C>(self, connector: C) -> Client<C, Empty<Bytes>>
    where
        C: hyper_util::client::legacy::connect::Connect + Clone,
    {
        let max_idle = match self {
            Connections::Fresh => 0,
            Connections::Reused => MAX_IDLE_PER_SERVER,
        };
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(max_idle)
            .build(connector)
    }
}

/// HTTP/2 clients, one per server: a gRPC request's `:authority` (`NAME.NS`) is not
/// the server it goes to (a gateway), and HTTP/2 takes the authority from the URL, which
/// a client also uses to pick the connection. Each server's client connects to that
/// server whatever the URL says; within it, hyper keeps one connection per authority,
/// so every check of one service through one gateway is a stream on one connection.
#[derive(Clone, Debug)]
struct Http2 {
    connections: Connections,
    /// `None`: plaintext only (h2c). With TLS, a configuration without ALPN, to which
    /// each connector adds `h2`.
    tls: Option<Arc<rustls::ClientConfig>>,
    clients: Arc<Mutex<HashMap<String, Http2Client>>>,
}

#[derive(Clone, Debug)]
enum Http2Client {
    Plain(Client<ToServer<HttpConnector>, Full<Bytes>>),
    Tls(Client<ToServer<HttpsConnector<HttpConnector>>, Full<Bytes>>),
}

/// Connects to `server` (`scheme://host:port`) whatever URI it is asked for.
#[derive(Clone, Debug)]
struct ToServer<C> {
    inner: C,
    server: Uri,
}

impl<C> tower_service::Service<Uri> for ToServer<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, _asked: Uri) -> Self::Future {
        Box::pin(self.inner.call(self.server.clone()))
    }
}

/// An HTTP/2 answer read to its end.
#[derive(Debug)]
pub struct Http2Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Empty when the answer had none.
    pub trailers: HeaderMap,
}

impl Http2 {
    fn new(connections: Connections, tls: Option<rustls::ClientConfig>) -> Http2 {
        Http2 {
            connections,
            tls: tls.map(Arc::new),
            clients: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The client of `server` (`scheme://host:port`).
    fn client(&self, server: &Uri) -> Result<Http2Client, ClientError> {
        let key = server.to_string();
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| ClientError::Http("the HTTP/2 clients' lock is poisoned".into()))?;
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let max_idle = match self.connections {
            Connections::Fresh => 0,
            Connections::Reused => MAX_IDLE_PER_SERVER,
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_max_idle_per_host(max_idle).http2_only(true);
        let client = match (&self.tls, server.scheme_str()) {
            (Some(tls), Some("https")) => {
                http.enforce_http(false);
                // Sets ALPN to `h2` alone: a gateway that cannot speak HTTP/2 fails
                // the handshake rather than answering a gRPC check in HTTP/1.1.
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(rustls::ClientConfig::clone(tls))
                    .https_only()
                    .enable_http2()
                    .wrap_connector(http);
                Http2Client::Tls(builder.build(ToServer {
                    inner: https,
                    server: server.clone(),
                }))
            }
            (_, Some("http")) => Http2Client::Plain(builder.build(ToServer {
                inner: http,
                server: server.clone(),
            })),
            _ => return Err(ClientError::Url(key)),
        };
        clients.insert(key, client.clone());
        Ok(client)
    }
}

impl HttpClient {
    /// A plain HTTP client that opens a new connection for every request.
    pub fn fresh_connections() -> HttpClient {
        HttpClient::plain(Connections::Fresh)
    }

    /// A plain HTTP client.
    pub fn plain(connections: Connections) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        HttpClient {
            inner: Inner::Plain(connections.client(connector)),
            http2: Http2::new(connections, None),
        }
    }

    /// Like [`HttpClient::plain`], and `https://` URLs use `tls` (which says which
    /// servers to trust and which certificate to present).
    pub fn tls(tls: rustls::ClientConfig, connections: Connections) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // The TLS layer decides per scheme; the TCP connector must accept https URLs.
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        HttpClient {
            inner: Inner::Tls(connections.client(connector)),
            http2: Http2::new(connections, Some(tls)),
        }
    }

    /// `POST uri` over HTTP/2 to `server` (`http://HOST:PORT`, h2c with prior knowledge,
    /// or `https://HOST:PORT` on a TLS client), whatever host `uri` names (it becomes the
    /// `:authority`); the whole answer, its body bounded by `limit` bytes, within
    /// `timeout`.
    pub async fn post_http2(
        &self,
        server: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        timeout: Duration,
        limit: usize,
    ) -> Result<Http2Answer, ClientError> {
        let server: Uri = server
            .parse()
            .map_err(|_| ClientError::Url(server.to_string()))?;
        let uri: Uri = uri.parse().map_err(|_| ClientError::Url(uri.to_string()))?;
        let mut req = Request::post(uri).version(hyper::Version::HTTP_2);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let client = self.http2.client(&server)?;
        let work = async {
            let sent = match &client {
                Http2Client::Plain(c) => c.request(req).await,
                Http2Client::Tls(c) => c.request(req).await,
            };
            let resp = match sent {
                Err(e) if e.is_connect() => {
                    return Err(ClientError::Http(format!(
                        "cannot connect: {}",
                        innermost(&e)
                    )));
                }
                Err(e) => return Err(ClientError::Http(chain(&e))),
                Ok(resp) => resp,
            };
            let (parts, body) = resp.into_parts();
            let collected = http_body_util::Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| ClientError::Http(format!("reading the body: {e}")))?;
            let trailers = collected.trailers().cloned().unwrap_or_default();
            Ok(Http2Answer {
                status: parts.status,
                headers: parts.headers,
                body: collected.to_bytes(),
                trailers,
            })
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    /// Sends `GET uri` with extra headers; waits at most `timeout` for the response head.
    pub async fn get(
        &self,
        uri: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Response<hyper::body::Incoming>, ClientError> {
        let uri: Uri = uri.parse().map_err(|_| ClientError::Url(uri.to_string()))?;
        let mut req = Request::get(uri.clone());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let sent = match &self.inner {
            Inner::Plain(c) => c.request(req),
            Inner::Tls(c) => c.request(req),
        };
        match tokio::time::timeout(timeout, sent).await {
            Err(_) => Err(ClientError::Timeout(timeout)),
            Ok(Err(e)) if e.is_connect() => Err(ClientError::Http(format!(
                "cannot connect: {}",
                innermost(&e)
            ))),
            Ok(Err(e)) => Err(ClientError::Http(chain(&e))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// `get`, then the whole body (bounded by `limit` bytes), all within `timeout`.
    pub async fn get_body(
        &self,
        uri: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
        limit: usize,
    ) -> Result<(Response<()>, Bytes), ClientError> {
        let work = async {
            let resp = self.get(uri, headers, timeout).await?;
            let (parts, body) = resp.into_parts();
            let body = http_body_util::Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| ClientError::Http(format!("reading the body: {e}")))?
                .to_bytes();
            Ok((Response::from_parts(parts, ()), body))
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }
}

/// Reads what is left of a response body, at most `limit` bytes and until `deadline`,
/// and drops it: a connection goes back to its pool only once the response it carried
/// was read to its end.
pub async fn drain(body: hyper::body::Incoming, limit: usize, deadline: tokio::time::Instant) {
    let read = http_body_util::Limited::new(body, limit).collect();
    let _ = tokio::time::timeout_at(deadline, read).await;
}

/// The root cause alone ("Connection refused (os error 111)").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut at = e;
    while let Some(next) = at.source() {
        at = next;
    }
    at.to_string()
}

/// An error and its causes on one line ("client error (Connect): tcp connect error: ...").
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
