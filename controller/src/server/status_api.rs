//! The status API (read-only, on the operational listener):
//!
//! - `GET /v1/status` → the document ([`detour_core::report::StatusReport`]) with
//!   `ETag: "<version>"`; `If-None-Match` naming the current version → 304, and with
//!   `?wait=30s` as well the answer is held until a new version (200) or the end of the
//!   wait (304): the table API's long-poll ([`super::longpoll`]), for scripts and
//!   `detour status --watch`.
//! - `GET /v1/status/events` → server-sent events: one `status` event carrying the whole
//!   document at once, then one per new version (what the `/ui` page listens to; a
//!   browser's `EventSource` reconnects by itself). Each version's event is made once
//!   and shared by every stream ([`PublishedStatus::event`]).

use super::AppState;
use super::longpoll::Poll;
use crate::reporter::PublishedStatus;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
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
    let stream = versions(app.status.clone(), app.shutdown.clone()).map(move |frame| {
        let _held = &slot;
        frame
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A comment line this often keeps an idle stream's connection (and the proxies on its
/// way) from timing out, and finds a client that went away.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Every version from the current one on, as `status` events, with a comment after
/// [`KEEP_ALIVE`] without one; ends when the server shuts down (a stream that never
/// ended would hold graceful shutdown forever).
fn versions(
    status: watch::Receiver<Arc<PublishedStatus>>,
    shutdown: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    futures::stream::unfold(
        (status, shutdown, true),
        |(mut status, mut shutdown, first)| async move {
            if !first {
                // True: nothing new for KEEP_ALIVE (the futures borrow `shutdown`, so the
                // comment is sent after the select).
                let keep_alive = tokio::select! {
                    changed = status.changed() => { changed.ok()?; false }
                    _ = shutdown.wait_for(|stop| *stop) => return None,
                    () = tokio::time::sleep(KEEP_ALIVE) => true,
                };
                if keep_alive {
                    let comment = Bytes::from_static(b":\n\n");
                    return Some((Ok(comment), (status, shutdown, false)));
                }
            }
            if *shutdown.borrow() {
                return None;
            }
            let current = status.borrow_and_update().clone();
            Some((Ok(current.event()), (status, shutdown, false)))
        },
    )
}
