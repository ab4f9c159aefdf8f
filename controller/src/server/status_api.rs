//! The status API (read-only, on the operational listener):
//!
//! - `GET /v1/status` → the document ([`detour_core::report::StatusReport`]) with
//!   `ETag: "<version>"`; `If-None-Match` naming the current version → 304, and with
//!   `?wait=30s` as well the answer is held until a new version (200) or the end of the
//!   wait (304): the table API's long-poll ([`super::longpoll`]), for scripts and
//!   `detour status --watch`.
//! - `GET /v1/status/events` → server-sent events: one `status` event carrying the whole
//!   document at once, then one per new version (what the `/ui` page listens to; a
//!   browser's `EventSource` reconnects by itself).

use super::AppState;
use super::longpoll::Poll;
use crate::reporter::PublishedStatus;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Deserialize)]
pub(super) struct StatusQuery {
    wait: Option<String>,
}

pub(super) async fn get_status(
    State(app): State<AppState>,
    Query(query): Query<StatusQuery>,
    headers: HeaderMap,
) -> Response {
    let poll = match Poll::new(query.wait.as_deref(), &headers, app.max_wait) {
        Ok(poll) => poll,
        Err(bad) => return bad.into_response(),
    };
    // The status document always exists (an empty one before the first build).
    poll.answer(
        app.status.clone(),
        app.shutdown.clone(),
        &app.status_watchers,
        None,
        |status| Some(status.clone()),
        || StatusCode::NOT_FOUND.into_response(),
    )
    .await
}

/// An event stream holds one of the status watchers' slots while it lasts; over the cap,
/// 503 with the reason.
pub(super) async fn status_events(State(app): State<AppState>) -> Response {
    let slot = match app.status_watchers.take() {
        Ok(slot) => slot,
        Err(full) => return full.into_response(),
    };
    let stream = versions(app.status.clone(), app.shutdown.clone()).map(move |event| {
        let _held = &slot;
        event
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
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
