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
use crate::client::{ClientError, Connections, Http2Answer, HttpClient, drain};
use bytes::Bytes;
use detour_core::health::state::{Cause, Check};
use detour_core::model::{Address, CheckKind, ProbeSpec};
use std::collections::BTreeMap;
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
    /// The result as the health state machine takes it: a pass, a failure the gateway
    /// answered (the service failed behind it), or no answer from the gateway at all.
    pub fn check(&self) -> Check {
        match self {
            _ if self.passed() => Check::Passed,
            ProbeResult::Timeout(_) | ProbeResult::Error(_) => Check::Failed(Cause::Gateway),
            _ => Check::Failed(Cause::Service),
        }
    }

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
    /// Over mTLS, per member cluster: a client presenting that cluster's Envoy
    /// certificate, for the checks made on its behalf ([`ProbeSpec::caller`]).
    callers: Arc<BTreeMap<String, watch::Receiver<Arc<HttpClient>>>>,
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
            callers: Arc::default(),
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
            callers: Arc::default(),
        }
    }

    /// Checks made for a scheme whose primary is in cluster C present C's Envoy
    /// certificate (the newest client of `callers[C]`), the one C's Envoy presents to
    /// the same gateway; clusters not in `callers` use the probe certificate.
    pub fn with_callers(
        self,
        callers: BTreeMap<String, watch::Receiver<Arc<HttpClient>>>,
    ) -> Prober {
        Prober {
            callers: Arc::new(callers),
            ..self
        }
    }

    /// The check made for `spec`: `spec` itself when it is made with its caller's own
    /// certificate, else the same check without a caller, which every caller without
    /// one of its own shares (all of them, in plaintext).
    pub fn probed(&self, spec: &ProbeSpec) -> ProbeSpec {
        match &self.client {
            ProbeClient::Tls(_) if self.callers.contains_key(&spec.caller) => spec.clone(),
            _ => ProbeSpec {
                caller: String::new(),
                ..spec.clone()
            },
        }
    }

    /// Checks `spec`'s target through its gateway's instances in turn. A check judges
    /// the service, not one instance or one gateway instance:
    /// * a gateway instance that gives no answer at all (refused, reset) is not the
    ///   service's failure, so the next is tried — the check fails for the gateway only
    ///   when none answers;
    /// * a failed answer or a timeout is asked once more, through the next gateway
    ///   instance: the gateway's balancer sends the second try to another instance of
    ///   the service (it retries refused connections on others by itself, but a frozen
    ///   or dying instance answers late or with an error), so one bad instance among
    ///   live ones does not fail the check.
    pub async fn probe(&self, spec: &ProbeSpec) -> ProbeResult {
        let Some(first) = spec.gateways.first() else {
            return ProbeResult::Error("the target's cluster has no gateway".into());
        };
        let mut result = self.probe_through(spec, first).await;
        let mut tries = Tries::new(spec.gateways.len());
        while let Some(next) = tries.next_after(&result) {
            let gateway = spec.gateways.get(next).unwrap_or(first);
            result = self.probe_through(spec, gateway).await;
        }
        result
    }

    async fn probe_through(&self, spec: &ProbeSpec, gateway: &Address) -> ProbeResult {
        let (client, scheme) = match (&self.client, self.callers.get(&spec.caller)) {
            (ProbeClient::Plain(c), _) => ((**c).clone(), "http"),
            (ProbeClient::Tls(_), Some(caller)) => ((**caller.borrow()).clone(), "https"),
            (ProbeClient::Tls(rx), None) => ((**rx.borrow()).clone(), "https"),
        };
        let path = match &spec.check.kind {
            CheckKind::Http { path } => path,
            CheckKind::Grpc { service_name } => {
                return probe_grpc(&client, scheme, spec, gateway, service_name).await;
            }
        };
        let uri = format!("{scheme}://{gateway}{path}");
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

/// Which gateway instance a check tries next, if any (see [`Prober::probe`]).
#[derive(Debug)]
struct Tries {
    gateways: usize,
    /// Tries made so far.
    made: usize,
    /// Tries that got an answer (or timed out) and failed.
    failed_answers: usize,
}

impl Tries {
    /// Answered failures a check takes before it fails: the first, and one more try.
    const FAILED_ANSWERS: usize = 2;

    fn new(gateways: usize) -> Tries {
        Tries {
            gateways: gateways.max(1),
            made: 1,
            failed_answers: 0,
        }
    }

    /// After a try that gave `result`: the index of the gateway instance to try next.
    fn next_after(&mut self, result: &ProbeResult) -> Option<usize> {
        if result.passed() {
            return None;
        }
        if !matches!(result, ProbeResult::Error(_)) {
            self.failed_answers += 1;
        }
        // Every gateway instance once for "no answer", one more for a failed answer.
        let budget = self.gateways + usize::from(self.failed_answers > 0);
        if self.failed_answers >= Self::FAILED_ANSWERS || self.made >= budget {
            return None;
        }
        let next = self.made % self.gateways;
        self.made += 1;
        Some(next)
    }
}

/// A gRPC check: `Check` for `service_name`, sent to the gateway with `:authority`
/// NAME.NS. The answer passes only when the HTTP status is 200, `grpc-status` is 0 and
/// the message says SERVING.
async fn probe_grpc(
    client: &HttpClient,
    scheme: &str,
    spec: &ProbeSpec,
    gateway: &Address,
    service_name: &str,
) -> ProbeResult {
    let server = format!("{scheme}://{gateway}");
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
    grpc_result(&answer, started.elapsed())
}

/// What a whole `Check` answer means (`elapsed`: since the check began).
fn grpc_result(answer: &Http2Answer, elapsed: Duration) -> ProbeResult {
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
        Ok(ServingStatus::Serving) => ProbeResult::Serving { elapsed },
        Ok(status) => ProbeResult::NotServing(status),
        Err(e) => ProbeResult::Error(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{HeaderMap, HeaderValue};

    fn answer(
        status: u16,
        headers: &[(&str, &str)],
        trailers: &[(&str, &str)],
        body: &[u8],
    ) -> Http2Answer {
        let map = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(
                    hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            m
        };
        Http2Answer {
            status: hyper::StatusCode::from_u16(status).unwrap(),
            headers: map(headers),
            body: Bytes::copy_from_slice(body),
            trailers: map(trailers),
        }
    }

    const SERVING: &[u8] = &[0, 0, 0, 0, 2, 0x08, 1];
    const NOT_SERVING: &[u8] = &[0, 0, 0, 0, 2, 0x08, 2];
    const MS: Duration = Duration::from_millis(3);

    #[test]
    fn a_check_tries_each_gateway_for_an_answer_and_a_failed_answer_once_more() {
        let error = ProbeResult::Error("refused".into());
        let failed = ProbeResult::BadStatus { status: 503 };
        let passed = ProbeResult::Passed {
            status: 200,
            elapsed: Duration::ZERO,
        };
        // One gateway instance: a failed answer is asked again there; no answer is not.
        assert_eq!(Tries::new(1).next_after(&failed), Some(0));
        assert_eq!(Tries::new(1).next_after(&error), None);
        assert_eq!(Tries::new(1).next_after(&passed), None);
        let mut tries = Tries::new(1);
        assert_eq!(tries.next_after(&failed), Some(0));
        assert_eq!(tries.next_after(&failed), None);
        // Three instances that never answer: each once.
        let mut tries = Tries::new(3);
        assert_eq!(tries.next_after(&error), Some(1));
        assert_eq!(tries.next_after(&error), Some(2));
        assert_eq!(tries.next_after(&error), None);
        // Two instances, the first refuses, the second fails: once more, on the first.
        let mut tries = Tries::new(2);
        assert_eq!(tries.next_after(&error), Some(1));
        assert_eq!(tries.next_after(&failed), Some(0));
        assert_eq!(tries.next_after(&failed), None);
        // A timeout counts as a failed answer.
        assert_eq!(
            Tries::new(1).next_after(&ProbeResult::Timeout(Duration::ZERO)),
            Some(0)
        );
    }

    #[test]
    fn serving_with_status_0_passes_and_nothing_else_does() {
        let ok = grpc_result(&answer(200, &[], &[("grpc-status", "0")], SERVING), MS);
        assert_eq!(ok, ProbeResult::Serving { elapsed: MS });
        assert!(ok.passed());
        assert_eq!(ok.label(), "success");
        assert_eq!(ok.to_string(), "gRPC SERVING in 3ms");

        let not = grpc_result(&answer(200, &[], &[("grpc-status", "0")], NOT_SERVING), MS);
        assert_eq!(not, ProbeResult::NotServing(ServingStatus::NotServing));
        assert_eq!(not.to_string(), "gRPC NOT_SERVING");
        assert!(!not.passed());

        // A non-zero status fails whatever the body says.
        let failed = grpc_result(
            &answer(
                200,
                &[],
                &[
                    ("grpc-status", "14"),
                    ("grpc-message", "upstream connect error"),
                ],
                SERVING,
            ),
            MS,
        );
        assert_eq!(
            failed,
            ProbeResult::GrpcStatus {
                code: 14,
                message: "upstream connect error".into()
            }
        );
        assert_eq!(
            failed.to_string(),
            "gRPC status 14 (UNAVAILABLE): upstream connect error"
        );
        assert_eq!(failed.label(), "failure");
    }

    #[test]
    fn a_headers_only_answer_carries_its_status_in_the_headers() {
        let r = grpc_result(&answer(200, &[("grpc-status", "12")], &[], &[]), MS);
        assert!(
            matches!(r, ProbeResult::GrpcStatus { code: 12, .. }),
            "{r:?}"
        );
        assert_eq!(r.to_string(), "gRPC status 12 (UNIMPLEMENTED)");
        // The trailers, when there are some, are what counts.
        let r = grpc_result(
            &answer(
                200,
                &[("grpc-status", "0")],
                &[("grpc-status", "2")],
                SERVING,
            ),
            MS,
        );
        assert!(
            matches!(r, ProbeResult::GrpcStatus { code: 2, .. }),
            "{r:?}"
        );
    }

    #[test]
    fn answers_that_are_not_grpc_fail() {
        assert_eq!(
            grpc_result(&answer(503, &[], &[], b"no healthy upstream"), MS),
            ProbeResult::BadStatus { status: 503 }
        );
        for (trailers, body, why) in [
            (&[][..], SERVING, "no grpc-status"),
            (&[("grpc-status", "ok")][..], SERVING, "is no number"),
            (&[("grpc-status", "0")][..], &[][..], "has no message"),
            (
                &[("grpc-status", "0")][..],
                &[1, 0, 0, 0, 0][..],
                "compressed",
            ),
        ] {
            let r = grpc_result(&answer(200, &[], trailers, body), MS);
            assert!(
                matches!(&r, ProbeResult::Error(e) if e.contains(why)),
                "{trailers:?} {body:?}: {r:?}"
            );
            assert!(!r.passed());
        }
    }
}
