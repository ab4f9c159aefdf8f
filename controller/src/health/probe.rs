//! One health check: `GET <path>` with `Host: NAME.NS` sent to the target cluster's
//! east-west gateway, so a check passes only when the gateway and the service both work
//! (the path failover traffic takes). Used by the checker and by `detour explain`.
//!
//! With mTLS the probe speaks HTTPS to the gateway, presents the controller's probe
//! certificate and verifies the gateway's certificate against the federation CA and the
//! gateway's address (its certificate names it).

use crate::client::{ClientError, Connections, HttpClient};
use crate::model::ProbeSpec;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

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
        match client.get(&uri, &headers, spec.check.timeout).await {
            Ok(resp) if resp.status().is_success() => ProbeResult::Passed {
                status: resp.status().as_u16(),
                elapsed: started.elapsed(),
            },
            Ok(resp) => ProbeResult::BadStatus {
                status: resp.status().as_u16(),
            },
            Err(ClientError::Timeout(t)) => ProbeResult::Timeout(t),
            Err(e) => ProbeResult::Error(e.to_string()),
        }
    }
}
