//! `GET /v1/tables/{cluster}`: the cluster's table as JSON with `ETag: "<version>"`.
//! `If-None-Match` naming the current version → 304; with `?wait=30s` as well, the
//! answer is held until the version changes (200) or the wait ends (304).
//!
//! Over mTLS ([`Access::ByCertificate`]) the client's certificate must name the cluster
//! asked for, as `spiffe://detour.dev/cluster/C/table`; any other client gets 403,
//! whether or not the cluster exists (a 404 would tell it which clusters do).

use super::{Access, AppState, json_error};
use crate::metrics::{CodeLabels, InFlight};
use crate::tls::server::Peer;
use axum::Extension;
use axum::extract::ConnectInfo;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use detour_core::pki::identity::{ClusterRole, Identity};
use detour_core::tables::PublishedTable;
use detour_filter::duration::parse_duration;
use serde::Deserialize;
use std::time::Duration;
use tokio::time::Instant;
use tracing::warn;

#[derive(Deserialize)]
pub(super) struct TableQuery {
    wait: Option<String>,
}

pub(super) async fn get_table(
    State(app): State<AppState>,
    Path(cluster): Path<String>,
    Query(query): Query<TableQuery>,
    peer: Option<Extension<ConnectInfo<Peer>>>,
    headers: HeaderMap,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(p))| p);
    let response = match authorize(app.access, peer.as_ref(), &cluster) {
        Ok(()) => answer(&app, &cluster, query, &headers).await,
        Err(why) => {
            warn!(
                peer = peer.as_ref().map(|p| p.addr.to_string()),
                %cluster,
                reason = %why,
                "table request refused"
            );
            json_error(StatusCode::FORBIDDEN, &why)
        }
    };
    app.metrics
        .table_requests
        .get_or_create(&CodeLabels {
            code: response.status().as_u16(),
        })
        .inc();
    response
}

async fn answer(app: &AppState, cluster: &str, query: TableQuery, headers: &HeaderMap) -> Response {
    let wait = match query.wait.as_deref().map(parse_wait) {
        None => Duration::ZERO,
        Some(Ok(wait)) => wait.min(app.max_wait),
        Some(Err(e)) => return json_error(StatusCode::BAD_REQUEST, &format!("wait: {e}")),
    };
    let known = IfNoneMatch::parse(headers);
    let deadline = Instant::now() + wait;
    let mut tables = app.tables.clone();
    let mut shutdown = app.shutdown.clone();
    let mut _waiting = None;
    loop {
        let current = tables.borrow_and_update().get(cluster).cloned();
        let Some(table) = current else {
            return json_error(
                StatusCode::NOT_FOUND,
                &format!("no member cluster named {cluster:?}"),
            );
        };
        if !known.matches(table.version()) {
            return ok(&table);
        }
        if wait.is_zero() || *shutdown.borrow() {
            return not_modified(&table);
        }
        _waiting.get_or_insert_with(|| InFlight::new(&app.metrics.long_polls_in_flight));
        tokio::select! {
            changed = tables.changed() => {
                if changed.is_err() {
                    return not_modified(&table);
                }
            }
            _ = tokio::time::sleep_until(deadline) => return not_modified(&table),
            _ = shutdown.changed() => return not_modified(&table),
        }
    }
}

/// Whether `peer` may read `cluster`'s table; if not, why (the 403 body says it).
fn authorize(access: Access, peer: Option<&Peer>, cluster: &str) -> Result<(), String> {
    if access == Access::Open {
        return Ok(());
    }
    let allowed = Identity::cluster(cluster, ClusterRole::Table);
    match peer.and_then(|p| p.identity.as_ref()) {
        Some(id) if *id == allowed => Ok(()),
        Some(id) => Err(format!(
            "the client certificate is {id}; only {allowed} may read the table of cluster {cluster:?}"
        )),
        None => Err(format!(
            "the client certificate names no detour identity; only {allowed} may read the table of cluster {cluster:?}"
        )),
    }
}

/// `30s`, `500ms`, or plain seconds (`30`).
pub(super) fn parse_wait(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    parse_duration(text).map_err(|e| e.to_string())
}

fn etag(table: &PublishedTable) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{}\"", table.version()))
        .unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

fn ok(table: &PublishedTable) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag(table)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        table.json.clone(),
    )
        .into_response()
}

fn not_modified(table: &PublishedTable) -> Response {
    (
        StatusCode::NOT_MODIFIED,
        [
            (header::ETAG, etag(table)),
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
mod unit {
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
    fn only_a_clusters_table_identity_reads_its_table() {
        let peer = |id: Option<Identity>| Peer {
            addr: "127.0.0.1:1".parse().unwrap(),
            identity: id,
        };
        let west = peer(Some(Identity::cluster("west", ClusterRole::Table)));
        assert_eq!(
            authorize(Access::ByCertificate, Some(&west), "west"),
            Ok(())
        );
        assert_eq!(
            authorize(Access::ByCertificate, Some(&west), "east"),
            Err(
                "the client certificate is spiffe://detour.dev/cluster/west/table; only \
                 spiffe://detour.dev/cluster/east/table may read the table of cluster \"east\""
                    .into()
            )
        );
        // West's Envoy may call gateways, not read tables.
        let envoy = peer(Some(Identity::cluster("west", ClusterRole::Envoy)));
        assert!(authorize(Access::ByCertificate, Some(&envoy), "west").is_err());
        assert!(authorize(Access::ByCertificate, Some(&peer(None)), "west").is_err());
        assert!(authorize(Access::ByCertificate, None, "west").is_err());
        assert_eq!(authorize(Access::Open, None, "west"), Ok(()));
    }

    #[test]
    fn waits_read_like_durations() {
        assert_eq!(parse_wait("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_wait("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_wait("5"), Ok(Duration::from_secs(5)));
        assert!(parse_wait("soon").is_err());
    }
}
