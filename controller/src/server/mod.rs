//! The controller's HTTP surface: the table API (`/v1/tables/{cluster}`) and the
//! operational endpoints (`/healthz`, `/readyz`, `/metrics`).
//!
//! [`router`] is transport-agnostic: [`serve`] runs it on a plain TCP listener today; the
//! mTLS listener (issue 4) serves the same router behind rustls and adds the client's
//! identity as a request extension for the table handler to check, and a status API can
//! be merged in as more routes.

mod ops;
mod tables;

use crate::metrics::Metrics;
use crate::tables::TableSet;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
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
    /// Config loaded and every target checked once.
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    /// Becomes true when the server stops: waiting long-polls answer at once.
    pub shutdown: watch::Receiver<bool>,
    pub max_wait: Duration,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/tables/{cluster}", get(tables::get_table))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(not_found)
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
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

async fn not_found() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "no such endpoint (see /v1/tables/{cluster}, /healthz, /readyz, /metrics)",
    )
}

#[cfg(test)]
mod tests;
