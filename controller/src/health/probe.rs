//! One health check: `GET <path>` with `Host: NAME.NS` sent to the target cluster's
//! east-west gateway, so a check passes only when the gateway and the service both work
//! (the path failover traffic takes). Used by the checker and by `detour explain`.
//!
//! With mTLS the probe speaks HTTPS to the gateway, presents the controller's probe
//! certificate and verifies the gateway's certificate against the federation CA and the
//! gateway's address (its certificate names it).

use crate::client::{ClientError, Connections, HttpClient, drain};
use crate::model::ProbeSpec;
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
}

impl ProbeResult {
    pub fn passed(&self) -> bool {
        matches!(self, ProbeResult::Passed { .. })
    }

    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            ProbeResult::Passed { .. } => "success",
            ProbeResult::BadStatus { .. } => "failure",
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
        }
    }
}

#[derive(Clone, Debug)]
pub struct Prober {
    client: ProbeClient,
}

#[derive(Clone, Debug)]
enum ProbeClient {
    Plain(HttpClient),
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
            client: ProbeClient::Plain(HttpClient::plain(Connections::Reused)),
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
            ProbeClient::Plain(c) => (c.clone(), "http"),
            ProbeClient::Tls(rx) => ((**rx.borrow()).clone(), "https"),
        };
        let uri = format!("{scheme}://{}{}", spec.gateway, spec.check.path);
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
