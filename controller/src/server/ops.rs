//! `/healthz` (the process answers), `/readyz` (config loaded and every target checked
//! once, so tables carry real health), `/metrics`.

use super::AppState;
use crate::metrics::CONTENT_TYPE;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use std::sync::atomic::Ordering;

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

pub(super) async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    if app.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the first verdict of every target (no table is served before)\n",
        )
    }
}

pub(super) async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], app.metrics.encode())
}
