//! The controller's HTTP client (health probes, `explain --controller`): HTTP/1.1 over
//! hyper, plain or over rustls with a client certificate (see [`crate::tls::client`]).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
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
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        HttpClient {
            inner: Inner::Tls(connections.client(connector)),
        }
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
