//! The controller's HTTP surface: the table API (`/v1/tables/{cluster}`) and the
//! operational endpoints (`/healthz`, `/readyz`, `/metrics`, and the read-only status
//! API `/v1/status` with the page that shows it, `/ui/`).
//!
//! Without TLS, [`router`] (both) is served on one plain listener by [`serve`]. With
//! mTLS, [`table_router`] is served by [`serve_tls`] behind rustls, which hands each
//! connection's [`Peer`] (the identity of its client certificate) to the table handler:
//! a cluster may read only its own table ([`Access::ByCertificate`]). The operational
//! endpoints ([`ops_router`]) then stay on a plain listener of their own, where probes
//! and Prometheus can reach them without a certificate.

pub mod caps;
pub mod conn;
mod longpoll;
mod ops;
mod status_api;
mod tables;
mod ui;

use crate::metrics::Metrics;
use crate::reporter::PublishedStatus;
use crate::tls::server::{Peer, TlsListener};
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use caps::Slots;
use conn::{ConnLimits, serve_with_limits};
use detour_core::tables::TableSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Longest `?wait=` honoured; longer waits are cut to this.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct AppState {
    pub tables: watch::Receiver<Arc<TableSet>>,
    /// The status API's current document.
    pub status: watch::Receiver<Arc<PublishedStatus>>,
    /// Config loaded and every target has its first verdict; tables are published from
    /// then on.
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    /// Becomes true when the server stops: waiting long-polls answer at once.
    pub shutdown: watch::Receiver<bool>,
    pub max_wait: Duration,
    pub access: Access,
    /// Table long-polls waiting at once (`--max-long-polls`).
    pub long_polls: Slots,
    /// Status event streams and status long-polls at once (`--max-status-watchers`).
    pub status_watchers: Slots,
}

/// Who may read which table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone may read any table (plain HTTP: there is no identity to check).
    Open,
    /// Only the client whose certificate names cluster C as its table identity
    /// (`spiffe://detour.dev/cluster/C/table`) may read C's table.
    ByCertificate,
}

/// The table API and the operational endpoints, for one plain listener.
pub fn router(state: AppState) -> Router {
    routes(Router::new(), true, true)
        .fallback(not_found)
        .with_state(state)
}

/// The table API alone.
pub fn table_router(state: AppState) -> Router {
    routes(Router::new(), true, false)
        .fallback(not_found)
        .with_state(state)
}

/// The operational endpoints alone: `/healthz`, `/readyz`, `/metrics`, the status API
/// and the status page.
pub fn ops_router(state: AppState) -> Router {
    routes(Router::new(), false, true)
        .fallback(not_found)
        .with_state(state)
}

fn routes(r: Router<AppState>, tables: bool, ops: bool) -> Router<AppState> {
    let r = if tables {
        r.route("/v1/tables/{cluster}", get(tables::get_table))
    } else {
        r
    };
    if ops {
        r.route("/healthz", get(ops::healthz))
            .route("/readyz", get(ops::readyz))
            .route("/metrics", get(ops::metrics))
            .route("/v1/status", get(status_api::get_status))
            .route("/v1/status/events", get(status_api::status_events))
            .route("/", get(ui::to_page))
            .route("/ui", get(ui::to_page))
            .route("/ui/", get(ui::index))
            .route("/ui/app.js", get(ui::script))
            .route("/ui/style.css", get(ui::style))
    } else {
        r
    }
}

/// Serves `router` on `listener` until `shutdown` completes, with `limits` on every
/// connection.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_limits(listener, router, limits, shutdown, |_, _| None).await
}

/// Serves `router` over mTLS on `listener` until `shutdown` completes; handlers see
/// each connection's [`Peer`] as `ConnectInfo`.
pub async fn serve_tls(
    listener: TlsListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_limits(listener, router, limits, shutdown, |io, addr| {
        Some(Peer::of_connection(io, *addr))
    })
    .await
}

/// A JSON error body: `{"error": "..."}`.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// A 503 with a JSON error body and `Retry-After: retry_after` (seconds): the request
/// cannot be answered now, and may be tried again then.
pub(crate) fn unavailable(message: &str, retry_after: &'static str) -> Response {
    let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, message);
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static(retry_after),
    );
    response
}

async fn not_found() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "no such endpoint (see /v1/tables/{cluster}, /healthz, /readyz, /metrics, /v1/status, \
         /ui/; with mTLS all but the first are on the plain --ops-listen listener)",
    )
}

#[cfg(test)]
mod tests;
