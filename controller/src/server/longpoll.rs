//! The one long-poll of the controller's HTTP APIs (tables and status): a versioned
//! document is answered with `ETag: "<version>"`; `If-None-Match` naming the current
//! version → 304, and with `?wait=30s` as well the answer is held until a new version
//! (200) or the end of the wait (304). Shutdown ends every wait with a 304.

use super::caps::Slots;
use super::json_error;
use crate::metrics::InFlight;
use crate::reporter::PublishedStatus;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use detour_core::tables::PublishedTable;
use detour_filter::duration::parse_duration;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// A `?wait=` that is not a duration: 400.
#[derive(Debug)]
pub(super) struct BadWait(String);

impl IntoResponse for BadWait {
    fn into_response(self) -> Response {
        json_error(StatusCode::BAD_REQUEST, &format!("wait: {}", self.0))
    }
}

/// A document served by version.
pub(super) trait Versioned {
    fn version(&self) -> &str;
    /// Its JSON, serialised once per version.
    fn json(&self) -> &Bytes;
}

impl Versioned for PublishedTable {
    fn version(&self) -> &str {
        PublishedTable::version(self)
    }
    fn json(&self) -> &Bytes {
        &self.json
    }
}

impl Versioned for PublishedStatus {
    fn version(&self) -> &str {
        PublishedStatus::version(self)
    }
    fn json(&self) -> &Bytes {
        &self.json
    }
}

/// What a request asks: how long it may wait, and which versions it has.
pub(super) struct Poll {
    wait: Duration,
    known: IfNoneMatch,
}

impl Poll {
    /// From `?wait=` (capped at `max_wait`) and `If-None-Match`.
    pub(super) fn new(
        wait: Option<&str>,
        headers: &HeaderMap,
        max_wait: Duration,
    ) -> Result<Poll, BadWait> {
        let wait = match wait.map(parse_wait) {
            None => Duration::ZERO,
            Some(Ok(wait)) => wait.min(max_wait),
            Some(Err(e)) => return Err(BadWait(e)),
        };
        Ok(Poll {
            wait,
            known: IfNoneMatch::parse(headers),
        })
    }

    /// How long the client may wait.
    pub(super) fn wait(&self) -> Duration {
        self.wait
    }

    /// The same request with `spent` of its wait used up.
    pub(super) fn spent(self, spent: Duration) -> Poll {
        Poll {
            wait: self.wait.saturating_sub(spent),
            known: self.known,
        }
    }

    /// Answers with the document `current` finds in `feed` (`missing()` when there is
    /// none), waiting for a new version while the client has the current one. A wait
    /// takes one of `slots` (none left: 503) and counts on `in_flight` while it lasts.
    pub(super) async fn answer<T, D: Versioned>(
        &self,
        mut feed: watch::Receiver<T>,
        mut shutdown: watch::Receiver<bool>,
        slots: &Slots,
        in_flight: Option<&Gauge>,
        current: impl Fn(&T) -> Option<Arc<D>>,
        missing: impl FnOnce() -> Response,
    ) -> Response {
        let deadline = Instant::now() + self.wait;
        let mut _waiting = None;
        let mut _slot = None;
        loop {
            let Some(doc) = current(&feed.borrow_and_update()) else {
                return missing();
            };
            if !self.known.matches(doc.version()) {
                return ok(&*doc);
            }
            if self.wait.is_zero() || *shutdown.borrow() {
                return not_modified(&*doc);
            }
            if _slot.is_none() {
                match slots.take() {
                    Ok(slot) => _slot = Some(slot),
                    Err(full) => return full.into_response(),
                }
            }
            if let Some(gauge) = in_flight {
                _waiting.get_or_insert_with(|| InFlight::new(gauge));
            }
            tokio::select! {
                changed = feed.changed() => {
                    if changed.is_err() {
                        return not_modified(&*doc);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return not_modified(&*doc),
                _ = shutdown.changed() => return not_modified(&*doc),
            }
        }
    }
}

/// `30s`, `500ms`, or plain seconds (`30`).
pub(super) fn parse_wait(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    parse_duration(text).map_err(|e| e.to_string())
}

fn etag(doc: &impl Versioned) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{}\"", doc.version()))
        .unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

fn ok(doc: &impl Versioned) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag(doc)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        doc.json().clone(),
    )
        .into_response()
}

fn not_modified(doc: &impl Versioned) -> Response {
    (
        StatusCode::NOT_MODIFIED,
        [
            (header::ETAG, etag(doc)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
    )
        .into_response()
}

/// The entity tags a client says it has (RFC 9110 §13.1.2; weak tags compare equal).
#[derive(Debug, PartialEq)]
pub(super) enum IfNoneMatch {
    None,
    Any,
    Tags(Vec<String>),
}

impl IfNoneMatch {
    pub(super) fn parse(headers: &HeaderMap) -> IfNoneMatch {
        let mut tags = Vec::new();
        for value in headers.get_all(header::IF_NONE_MATCH) {
            let Ok(value) = value.to_str() else { continue };
            for tag in value.split(',') {
                let tag = tag.trim();
                if tag == "*" {
                    return IfNoneMatch::Any;
                }
                let tag = tag.strip_prefix("W/").unwrap_or(tag);
                let tag = tag.trim_matches('"');
                if !tag.is_empty() {
                    tags.push(tag.to_string());
                }
            }
        }
        if tags.is_empty() {
            IfNoneMatch::None
        } else {
            IfNoneMatch::Tags(tags)
        }
    }

    pub(super) fn matches(&self, version: &str) -> bool {
        match self {
            IfNoneMatch::None => false,
            IfNoneMatch::Any => true,
            IfNoneMatch::Tags(tags) => tags.iter().any(|t| t == version),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> IfNoneMatch {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
        }
        IfNoneMatch::parse(&h)
    }

    #[test]
    fn if_none_match_forms() {
        assert_eq!(parse(&[]), IfNoneMatch::None);
        assert_eq!(parse(&["*"]), IfNoneMatch::Any);
        let p = parse(&["\"a\", W/\"b\"", "c"]);
        assert!(p.matches("a") && p.matches("b") && p.matches("c"));
        assert!(!p.matches("d"));
    }

    #[test]
    fn waits_read_like_durations() {
        assert_eq!(parse_wait("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_wait("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_wait("5"), Ok(Duration::from_secs(5)));
        assert!(parse_wait("soon").is_err());
    }
}
