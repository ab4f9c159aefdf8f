//! One health check: `GET <path>` with `Host: NAME.NS` sent to the target cluster's
//! east-west gateway, so a check passes only when the gateway and the service both work
//! (the path failover traffic takes). Used by the checker and by `detour explain`.
//!
//! A gRPC check (`healthCheck.grpc`) takes the same way, as gRPC: a `POST` of
//! `/grpc.health.v1.Health/Check` over HTTP/2 with `:authority` NAME.NS, passed when the
//! answer says SERVING with `grpc-status` 0 (see [`super::grpc`]).
//!
//! With mTLS the probe speaks HTTPS to the gateway, presents the controller's probe
//! certificate and verifies the gateway's certificate against the federation CA and the
//! gateway's address (its certificate names it).

use super::grpc::{self, ServingStatus};
use crate::client::{ClientError, Connections, HttpClient, drain};
use crate::model::{CheckKind, ProbeSpec};
use bytes::Bytes;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A health check's body beyond this is not read (its connection is then not reused).
const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// A 2xx answer.
    Passed {
        status: u16,
        elapsed: Duration,
    },
    /// An answer, but not 2xx (a gateway that cannot reach the service says 503).
    BadStatus {
        status: u16,
    },
    Timeout(Duration),
    /// No answer: connection refused, reset, ...
    Error(String),
    /// gRPC: the service says SERVING.
    Serving {
        elapsed: Duration,
    },
    /// gRPC: an answer with a status other than SERVING.
    NotServing(ServingStatus),
    /// gRPC: the call failed (a gateway that cannot reach the service says 14,
    /// UNAVAILABLE; a server without the health service says 12, UNIMPLEMENTED).
    GrpcStatus {
        code: u32,
        message: String,
    },
}

impl ProbeResult {
    pub fn passed(&self) -> bool {
        matches!(
            self,
            ProbeResult::Passed { .. } | ProbeResult::Serving { .. }
        )
    }

    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            ProbeResult::Passed { .. } | ProbeResult::Serving { .. } => "success",
            ProbeResult::BadStatus { .. }
            | ProbeResult::NotServing(_)
            | ProbeResult::GrpcStatus { .. } => "failure",
            ProbeResult::Timeout(_) => "timeout",
            ProbeResult::Error(_) => "error",
        }
    }
}

impl fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeResult::Passed { status, elapsed } => {
                write!(f, "HTTP {status} in {}ms", elapsed.as_millis())
            }
            ProbeResult::BadStatus { status } => write!(f, "HTTP {status}"),
            ProbeResult::Timeout(t) => write!(f, "no answer within {}ms", t.as_millis()),
            ProbeResult::Error(e) => f.write_str(e),
            ProbeResult::Serving { elapsed } => {
                write!(f, "gRPC SERVING in {}ms", elapsed.as_millis())
            }
            ProbeResult::NotServing(status) => write!(f, "gRPC {status}"),
            ProbeResult::GrpcStatus { code, message } => {
                write!(f, "gRPC status {code} ({})", grpc::code_name(*code))?;
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct Prober {
    client: ProbeClient,
}

#[derive(Clone, Debug)]
enum ProbeClient {
    // Behind an Arc as the other: a client with HTTP/2 settings is a few hundred bytes.
    Plain(Arc<HttpClient>),
    /// The newest mTLS client: rebuilt when the probe certificate is renewed.
    Tls(watch::Receiver<Arc<HttpClient>>),
}

impl Default for Prober {
    fn default() -> Self {
        Prober::new()
    }
}

impl Prober {
    pub fn new() -> Prober {
        Prober {
            client: ProbeClient::Plain(Arc::new(HttpClient::plain(Connections::Reused))),
        }
    }

    /// Probes over mTLS with `client` (see [`crate::tls::client::mtls_client`]; reuse its
    /// connections, as [`Prober::new`] does).
    pub fn tls(client: HttpClient) -> Prober {
        Prober::tls_watched(watch::channel(Arc::new(client)).1)
    }

    /// Probes over mTLS, each with the newest client of `clients`.
    pub fn tls_watched(clients: watch::Receiver<Arc<HttpClient>>) -> Prober {
        Prober {
            client: ProbeClient::Tls(clients),
        }
    }

    pub async fn probe(&self, spec: &ProbeSpec) -> ProbeResult {
        let (client, scheme) = match &self.client {
            ProbeClient::Plain(c) => ((**c).clone(), "http"),
            ProbeClient::Tls(rx) => ((**rx.borrow()).clone(), "https"),
        };
        let path = match &spec.check.kind {
            CheckKind::Http { path } => path,
            CheckKind::Grpc { service_name } => {
                return probe_grpc(&client, scheme, spec, service_name).await;
            }
        };
        let uri = format!("{scheme}://{}{path}", spec.gateway);
        let host = spec.target.service.authority();
        let started = Instant::now();
        let headers = [
            ("host", host.as_str()),
            ("user-agent", "detour-health-check"),
        ];
        let resp = match client.get(&uri, &headers, spec.check.timeout).await {
            Ok(resp) => resp,
            Err(ClientError::Timeout(t)) => return ProbeResult::Timeout(t),
            Err(e) => return ProbeResult::Error(e.to_string()),
        };
        // The status decides; the body (a few bytes, normally) is read only so that the
        // connection can serve the next check, within what is left of the timeout.
        let status = resp.status();
        let deadline = tokio::time::Instant::from_std(started + spec.check.timeout);
        drain(resp.into_body(), MAX_BODY_BYTES, deadline).await;
        if status.is_success() {
            ProbeResult::Passed {
                status: status.as_u16(),
                elapsed: started.elapsed(),
            }
        } else {
            ProbeResult::BadStatus {
                status: status.as_u16(),
            }
        }
    }
}

/// A gRPC check: `Check` for `service_name`, sent to the gateway with `:authority`
/// NAME.NS. The answer passes only when the HTTP status is 200, `grpc-status` is 0 and
/// the message says SERVING.
async fn probe_grpc(
    client: &HttpClient,
    scheme: &str,
    spec: &ProbeSpec,
    service_name: &str,
) -> ProbeResult {
    let server = format!("{scheme}://{}", spec.gateway);
    let uri = format!(
        "{scheme}://{}{}",
        spec.target.service.authority(),
        grpc::CHECK_PATH
    );
    // The server must answer within the check's timeout (`grpc-timeout`'s unit `m` is
    // milliseconds): a server that knows it cannot stops working on a dead check.
    let deadline = format!("{}m", spec.check.timeout.as_millis().max(1));
    let headers = [
        ("content-type", "application/grpc"),
        // gRPC requires it: the caller reads trailers (proxies may drop them otherwise).
        ("te", "trailers"),
        ("user-agent", "detour-health-check"),
        ("grpc-timeout", deadline.as_str()),
    ];
    let started = Instant::now();
    let body = Bytes::from(grpc::encode_request(service_name));
    let answer = match client
        .post_http2(
            &server,
            &uri,
            &headers,
            body,
            spec.check.timeout,
            MAX_BODY_BYTES,
        )
        .await
    {
        Ok(answer) => answer,
        Err(ClientError::Timeout(t)) => return ProbeResult::Timeout(t),
        Err(e) => return ProbeResult::Error(e.to_string()),
    };
    if answer.status != hyper::StatusCode::OK {
        return ProbeResult::BadStatus {
            status: answer.status.as_u16(),
        };
    }
    // In the trailers; in the headers of an answer that is only headers (how a server or
    // an Envoy that failed before any message answers).
    let field = |name: &str| {
        answer
            .trailers
            .get(name)
            .or_else(|| answer.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let Some(code) = field("grpc-status") else {
        return ProbeResult::Error("the gRPC answer has no grpc-status".into());
    };
    let Ok(code) = code.trim().parse::<u32>() else {
        return ProbeResult::Error(format!(
            "the gRPC answer's grpc-status {code:?} is no number"
        ));
    };
    if code != 0 {
        return ProbeResult::GrpcStatus {
            code,
            message: field("grpc-message").unwrap_or_default(),
        };
    }
    match grpc::decode_response(&answer.body) {
        Ok(ServingStatus::Serving) => ProbeResult::Serving {
            elapsed: started.elapsed(),
        },
        Ok(status) => ProbeResult::NotServing(status),
        Err(e) => ProbeResult::Error(e.to_string()),
    }
}
