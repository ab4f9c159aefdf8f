//! The table fetch, run only by the VM that holds the lease: a long-poll (or plain poll)
//! to the controller through its Envoy cluster, the table checked before it is shared,
//! and fail-static on every kind of error (the last good table stays in shared data).

use super::host;
use super::lease::LeaseKeeper;
use super::log;
use super::worker::Worker;
use crate::fetch::{
    Answer, Change, FetchError, FetchResult, Fetcher, UPSTREAM_SERVICE_TIME_HEADER,
    classify_answer, if_none_match, request_path, retry_after_of, status_of,
};
use crate::pairs::Pairs;
use crate::table::{Table, TableError};
use proxy_wasm::types::{BufferType, MapType};

/// The last good table, exactly as fetched (JSON).
pub const TABLE_KEY: &str = "detour.table";
/// Its version, so that VMs notice a new table without reading the table.
pub const VERSION_KEY: &str = "detour.table.version";
/// Wall-clock ms at which the controller last confirmed the table (200 or 304), for the
/// table-age gauge; shared so that a new lease holder reports the true age.
pub const CONFIRMED_KEY: &str = "detour.table.confirmed";

#[derive(Default)]
pub struct TableFetcher {
    state: Fetcher,
    /// When this VM started fetching, for the age gauge before any table was confirmed.
    started_ms: Option<u64>,
}

impl TableFetcher {
    /// Starts a fetch when one is due.
    pub fn tick(&mut self, worker: &Worker, now_ms: u64) {
        self.started_ms.get_or_insert(now_ms);
        let controller = &worker.config.controller;
        if !self.state.due(now_ms, controller) {
            return;
        }
        let held = host::shared_get(VERSION_KEY)
            .0
            .and_then(|v| String::from_utf8(v).ok())
            .filter(|v| !v.is_empty());
        let path = request_path(controller);
        let etag = held.as_deref().map(if_none_match);
        let mut headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", controller.authority.as_str()),
            ("accept", "application/json"),
        ];
        if let Some(etag) = etag.as_deref() {
            headers.push(("if-none-match", etag));
        }
        let headers = Pairs::from_pairs(headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        match host::dispatch(
            &controller.envoy_cluster,
            &headers,
            None,
            controller.fetch_timeout(),
        ) {
            Ok(token) => self.state.sent(token, now_ms),
            Err(status) => {
                let why = format!(
                    "Envoy refused the call to cluster {:?} ({status}; is the cluster defined?)",
                    controller.envoy_cluster
                );
                self.finish(
                    worker,
                    FetchResult::Failed(FetchError::Unreachable(why)),
                    now_ms,
                );
            }
        }
    }

    /// The controller's answer (or Envoy's report that there is none).
    pub fn on_response(
        &mut self,
        worker: &Worker,
        lease: &LeaseKeeper,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) {
        if !self.state.is_current(token) {
            return;
        }
        let now_ms = host::now_ms();
        let result = if num_headers == 0 {
            FetchResult::Failed(FetchError::Unreachable(
                "no answer (connection failed, reset or timed out)".into(),
            ))
        } else {
            let headers = host::header_map(MapType::HttpCallResponseHeaders);
            let status = status_of(&headers).unwrap_or(0);
            let from_upstream = headers.get(UPSTREAM_SERVICE_TIME_HEADER).is_some();
            // Envoy's own error answers are short; the detail is read only from them.
            let envoy_says = if from_upstream || body_size > 1024 {
                String::new()
            } else {
                host::buffer(BufferType::HttpCallResponseBody, body_size)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            };
            match classify_answer(status, from_upstream, retry_after_of(&headers), &envoy_says) {
                Answer::Table => store(worker, lease, body_size, now_ms),
                Answer::NotModified => FetchResult::NotModified,
                Answer::Failed(error) => FetchResult::Failed(error),
            }
        };
        self.finish(worker, result, now_ms);
    }

    fn finish(&mut self, worker: &Worker, result: FetchResult, now_ms: u64) {
        match &result {
            FetchResult::Updated | FetchResult::NotModified => {
                let _ = host::shared_set(CONFIRMED_KEY, now_ms.to_string().as_bytes(), None);
            }
            FetchResult::Failed(error) => {
                worker.stats.fetch_error(error.label()).increment();
                if let FetchError::Rejected(e) = error {
                    worker.stats.table_rejected(e.label()).increment();
                }
            }
        }
        let change =
            self.state
                .finished(&result, now_ms, &worker.config.controller, worker.random());
        match change {
            Some(Change::Failing(error)) => {
                let held = host::shared_get(VERSION_KEY)
                    .0
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_else(|| "none yet".into());
                log::warn(|| {
                    format!(
                        "detour: table fetch failed: {error}; keeping the last good table \
                         (version {held}) and retrying with back-off"
                    )
                });
            }
            Some(Change::Recovered { failures }) => log::info(|| {
                format!("detour: table fetch works again after {failures} failed attempts")
            }),
            None => {}
        }
    }

    /// Sets the table-age gauge (seconds since the controller last confirmed the table).
    pub fn report_age(&self, worker: &Worker, now_ms: u64) {
        let confirmed = host::shared_get(CONFIRMED_KEY)
            .0
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok())
            .or(self.started_ms)
            .unwrap_or(now_ms);
        worker
            .stats
            .table_age_seconds
            .set(now_ms.saturating_sub(confirmed) / 1_000);
    }
}

/// Checks a 200's table and, when good, shares it: table first, then its version, so a
/// VM that sees the new version always finds (at least) that table.
fn store(worker: &Worker, lease: &LeaseKeeper, body_size: usize, now_ms: u64) -> FetchResult {
    let config = &worker.config;
    let limit = config.controller.max_table_bytes;
    if body_size > limit {
        // Refused before copying it out of Envoy.
        return FetchResult::Failed(FetchError::Rejected(TableError::TooLarge {
            bytes: body_size,
            limit,
        }));
    }
    let body = host::buffer(BufferType::HttpCallResponseBody, body_size).unwrap_or_default();
    let table = match Table::parse(&body, &config.cluster, limit) {
        Ok(table) => table,
        Err(e) => return FetchResult::Failed(FetchError::Rejected(e)),
    };
    if !lease.still_held(now_ms) {
        log::debug(|| "detour: lost the fetcher lease during the fetch; not storing".into());
        return FetchResult::NotModified;
    }
    let previous = host::shared_get(VERSION_KEY).0;
    if host::shared_set(TABLE_KEY, &body, None).is_err()
        || host::shared_set(VERSION_KEY, table.version.as_bytes(), None).is_err()
    {
        return FetchResult::Failed(FetchError::Unreachable(
            "could not write the table to shared data".into(),
        ));
    }
    if previous.as_deref() != Some(table.version.as_bytes()) {
        log::info(|| {
            format!(
                "detour: table version {} for cluster {} fetched ({} schemes, {} bytes)",
                table.version,
                table.cluster,
                table.schemes.len(),
                body.len()
            )
        });
    }
    FetchResult::Updated
}
