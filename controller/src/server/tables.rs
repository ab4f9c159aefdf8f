//! `GET /v1/tables/{cluster}`: the cluster's table as JSON with `ETag: "<version>"`.
//! `If-None-Match` naming the current version → 304; with `?wait=30s` as well, the
//! answer is held until the version changes (200) or the wait ends (304)
//! ([`super::longpoll`], shared with the status API).
//!
//! Over mTLS ([`Access::ByCertificate`]) the client's certificate must name the cluster
//! asked for, as `spiffe://detour.dev/cluster/C/table`; any other client gets 403,
//! whether or not the cluster exists (a 404 would tell it which clusters do).

use super::longpoll::Poll;
use super::{Access, AppState, json_error, unavailable};
use crate::metrics::CodeLabels;
use crate::tls::server::Peer;
use axum::Extension;
use axum::extract::ConnectInfo;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use detour_core::pki::identity::{ClusterRole, Identity};
use serde::Deserialize;
use std::sync::atomic::Ordering;
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
    let poll = match Poll::new(query.wait.as_deref(), headers, app.max_wait) {
        Ok(poll) => poll,
        Err(bad) => return bad.into_response(),
    };
    // A controller that has just started publishes no table before every target has
    // its first verdict: a long-poll waits for it (out of its own wait), anything else
    // gets a 503 and the Envoy keeps the table it holds.
    let started = tokio::time::Instant::now();
    if !first_tables(app, poll.wait()).await {
        return unavailable(
            "no table yet: the controller has just started and the first round of health \
             checks is not done",
            "1",
        );
    }
    let poll = poll.spent(started.elapsed());
    poll.answer(
        app.tables.clone(),
        app.shutdown.clone(),
        &app.long_polls,
        Some(&app.metrics.long_polls_in_flight),
        |tables| tables.get(cluster).cloned(),
        || {
            json_error(
                StatusCode::NOT_FOUND,
                &format!("no member cluster named {cluster:?}"),
            )
        },
    )
    .await
}

/// Waits up to `wait` for the first tables (the controller is ready); whether they are
/// there.
async fn first_tables(app: &AppState, wait: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let mut tables = app.tables.clone();
    let mut shutdown = app.shutdown.clone();
    let mut open = true;
    loop {
        if app.ready.load(Ordering::Acquire) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline || *shutdown.borrow() {
            return false;
        }
        // Readiness is set just after the first tables are sent, so their wake-up may
        // come a moment early; the tick bounds that, and covers a first publication
        // that changed nothing (no member cluster at all).
        let tick = tokio::time::Instant::now() + std::time::Duration::from_millis(50);
        tokio::select! {
            r = tables.changed(), if open => open = r.is_ok(),
            r = shutdown.changed(), if open => open = r.is_ok(),
            _ = tokio::time::sleep_until(tick.min(deadline)) => {}
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

#[cfg(test)]
mod unit {
    use super::*;

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
}
