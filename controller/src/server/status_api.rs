//! The status API (read-only, on the operational listener):
//!
//! - `GET /v1/status` → the document ([`detour_core::status::report::StatusReport`]) with
//!   `ETag: "<version>"`; `If-None-Match` naming the current version → 304, and with
//!   `?wait=30s` as well the answer is held until a new version (200) or the end of the
//!   wait (304): the table API's long-poll, for scripts and `detour status --watch`.
//! - `GET /v1/status/events` → server-sent events: one `status` event carrying the whole
//!   document at once, then one per new version (what the `/ui` page listens to; a
//!   browser's `EventSource` reconnects by itself).

use super::tables::{IfNoneMatch, parse_wait};
use super::{AppState, json_error};
use crate::live::PublishedStatus;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Deserialize)]
pub(super) struct StatusQuery {
    wait: Option<String>,
}

pub(super) async fn get_status(
    State(app): State<AppState>,
    Query(query): Query<StatusQuery>,
    headers: HeaderMap,
) -> Response {
    let wait = match query.wait.as_deref().map(parse_wait) {
        None => Duration::ZERO,
        Some(Ok(wait)) => wait.min(app.max_wait),
        Some(Err(e)) => return json_error(StatusCode::BAD_REQUEST, &format!("wait: {e}")),
    };
    let known = IfNoneMatch::parse(&headers);
    let deadline = Instant::now() + wait;
    let mut status = app.status.clone();
    let mut shutdown = app.shutdown.clone();
    loop {
        let current = status.borrow_and_update().clone();
        if !known.matches(current.version()) {
            return ok(&current);
        }
        if wait.is_zero() || *shutdown.borrow() {
            return not_modified(&current);
        }
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    return not_modified(&current);
                }
            }
            _ = tokio::time::sleep_until(deadline) => return not_modified(&current),
            _ = shutdown.changed() => return not_modified(&current),
        }
    }
}

pub(super) async fn status_events(
    State(app): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(versions(app.status.clone(), app.shutdown.clone())).keep_alive(KeepAlive::default())
}

/// Every version from the current one on, as `status` events; ends when the server
/// shuts down (a stream that never ended would hold graceful shutdown forever).
fn versions(
    status: watch::Receiver<Arc<PublishedStatus>>,
    shutdown: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        (status, shutdown, true),
        |(mut status, mut shutdown, first)| async move {
            if !first {
                tokio::select! {
                    changed = status.changed() => changed.ok()?,
                    _ = shutdown.wait_for(|stop| *stop) => return None,
                }
            }
            if *shutdown.borrow() {
                return None;
            }
            let current = status.borrow_and_update().clone();
            // Compact JSON has no line breaks, so it is one `data:` line.
            let event = Event::default()
                .event("status")
                .id(current.version())
                .data(String::from_utf8_lossy(&current.json));
            Some((Ok(event), (status, shutdown, false)))
        },
    )
}

fn etag(status: &PublishedStatus) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{}\"", status.version()))
        .unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

fn ok(status: &PublishedStatus) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag(status)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        status.json.clone(),
    )
        .into_response()
}

fn not_modified(status: &PublishedStatus) -> Response {
    (
        StatusCode::NOT_MODIFIED,
        [
            (header::ETAG, etag(status)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
    )
        .into_response()
}
