//! The table API in-process: a real listener, a real client, tables changed by hand.

use super::*;
use crate::client::HttpClient;
use crate::reporter::{self, Versions};
use bytes::Bytes;
use detour_core::report::StatusReport;
use detour_core::tables::PublishedTable;
use detour_filter::table::TABLE_API_VERSION;
use detour_filter::table::wire::TableDoc;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

struct Api {
    addr: SocketAddr,
    tables: watch::Sender<Arc<TableSet>>,
    status: watch::Sender<Arc<PublishedStatus>>,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    client: HttpClient,
    _shutdown: watch::Sender<bool>,
}

fn table(cluster: &str, marker: &str) -> Arc<PublishedTable> {
    let mut doc = TableDoc {
        api_version: TABLE_API_VERSION.into(),
        cluster: cluster.into(),
        version: String::new(),
        schemes: vec![],
    };
    // Any content change makes a new version; the marker is such a change.
    doc.api_version.push_str(marker);
    Arc::new(PublishedTable::new(doc))
}

fn set(tables: &[Arc<PublishedTable>]) -> Arc<TableSet> {
    Arc::new(TableSet {
        tables: tables
            .iter()
            .map(|t| (t.doc.cluster.clone(), t.clone()))
            .collect(),
        ..TableSet::default()
    })
}

async fn start(max_wait: Duration) -> Api {
    let (tables, rx) = watch::channel(set(&[table("east", "")]));
    let (shutdown, shutdown_rx) = watch::channel(false);
    // Ready (the first round of checks done) unless a test says otherwise.
    let ready = Arc::new(AtomicBool::new(true));
    let metrics = Arc::new(Metrics::new());
    let (status, status_rx) =
        reporter::channel(&mut Versions::new(std::time::SystemTime::now()), "files");
    let state = AppState {
        tables: rx,
        status: status_rx,
        ready: ready.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown_rx,
        max_wait,
        access: Access::Open,
        long_polls: super::caps::Slots::long_polls(super::caps::DEFAULT_MAX_LONG_POLLS),
        status_watchers: super::caps::Slots::status_watchers(
            super::caps::DEFAULT_MAX_STATUS_WATCHERS,
        ),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        router(state),
        super::conn::ConnLimits::default(),
        std::future::pending(),
    ));
    Api {
        addr,
        tables,
        status,
        ready,
        metrics,
        client: HttpClient::fresh_connections(),
        _shutdown: shutdown,
    }
}

impl Api {
    async fn get(&self, path: &str, etag: Option<&str>) -> (u16, Option<String>, Bytes) {
        let uri = format!("http://{}{path}", self.addr);
        let quoted = etag.map(|e| format!("\"{e}\""));
        let headers: Vec<(&str, &str)> = quoted
            .iter()
            .map(|q| ("if-none-match", q.as_str()))
            .collect();
        let (resp, body) = self
            .client
            .get_body(&uri, &headers, Duration::from_secs(10), 1 << 20)
            .await
            .unwrap();
        let etag = resp
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().trim_matches('"').to_string());
        (resp.status().as_u16(), etag, body)
    }
}

#[tokio::test]
async fn serves_tables_with_etags_and_304() {
    let api = start(MAX_WAIT).await;
    let (status, etag, body) = api.get("/v1/tables/east", None).await;
    assert_eq!(status, 200);
    let doc: TableDoc = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc.cluster, "east");
    assert_eq!(etag.as_deref(), Some(doc.version.as_str()));

    let (status, etag2, body) = api.get("/v1/tables/east", Some(&doc.version)).await;
    assert_eq!(
        (status, etag2.as_deref()),
        (304, Some(doc.version.as_str()))
    );
    assert!(body.is_empty());
    let (status, _, _) = api.get("/v1/tables/east", Some("stale")).await;
    assert_eq!(status, 200);

    let (status, _, body) = api.get("/v1/tables/nowhere", None).await;
    assert_eq!(status, 404);
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["error"], "no member cluster named \"nowhere\"");
    let (status, _, _) = api.get("/v1/tables/east?wait=soon", None).await;
    assert_eq!(status, 400);
    let (status, _, _) = api.get("/nothing/here", None).await;
    assert_eq!(status, 404);

    let text = api.metrics.encode();
    assert!(
        text.contains("detour_table_requests_total{code=\"304\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("detour_table_requests_total{code=\"404\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_long_poll_answers_when_the_version_changes() {
    let api = Arc::new(start(MAX_WAIT).await);
    let v1 = api
        .tables
        .borrow()
        .get("east")
        .unwrap()
        .version()
        .to_string();
    let poll = {
        let api = api.clone();
        let v1 = v1.clone();
        tokio::spawn(async move { api.get("/v1/tables/east?wait=30s", Some(&v1)).await })
    };
    crate::testing::eventually("the poll waits", Duration::from_secs(5), || {
        api.metrics.long_polls_in_flight.get() == 1
    })
    .await;
    // A change elsewhere does not end the wait...
    api.tables
        .send(set(&[table("east", ""), table("west", "")]))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!poll.is_finished());
    // ...a new version of this table does.
    let next = table("east", "+1");
    api.tables.send(set(std::slice::from_ref(&next))).unwrap();
    let (status, etag, _) = poll.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(etag.as_deref(), Some(next.version()));
    assert_ne!(next.version(), v1);
    assert_eq!(api.metrics.long_polls_in_flight.get(), 0);
}

#[tokio::test]
async fn a_long_poll_ends_with_304_when_the_wait_ends_and_waits_are_capped() {
    let api = start(Duration::from_millis(100)).await;
    let v = api
        .tables
        .borrow()
        .get("east")
        .unwrap()
        .version()
        .to_string();
    let started = tokio::time::Instant::now();
    // Asks for 30s; the cap is 100ms here.
    let (status, etag, _) = api.get("/v1/tables/east?wait=30s", Some(&v)).await;
    assert_eq!((status, etag.as_deref()), (304, Some(v.as_str())));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // A cluster removed while a client waits is a 404.
    api.tables.send(set(&[])).unwrap();
    let (status, _, _) = api.get("/v1/tables/east?wait=1s", Some(&v)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn readiness_and_metrics() {
    let api = start(MAX_WAIT).await;
    api.ready.store(false, Ordering::Release);
    assert_eq!(api.get("/healthz", None).await.0, 200);
    assert_eq!(api.get("/readyz", None).await.0, 503);
    api.ready.store(true, Ordering::Release);
    assert_eq!(api.get("/readyz", None).await.0, 200);
    let (status, _, body) = api.get("/metrics", None).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("# TYPE detour_long_polls_in_flight gauge"));
}

/// Publishes a copy of the current status document under `version`.
fn publish_status(api: &Api, version: &str) {
    let mut report = api.status.borrow().report.clone();
    report.version = version.to_string();
    api.status
        .send(Arc::new(PublishedStatus::new(report)))
        .unwrap();
}

#[tokio::test]
async fn the_status_api_has_etags_304_and_long_polls() {
    let api = Arc::new(start(MAX_WAIT).await);
    let (status, etag, body) = api.get("/v1/status", None).await;
    assert_eq!(status, 200);
    let report: StatusReport = serde_json::from_slice(&body).unwrap();
    assert_eq!(report.api_version, "detour.dev/status/v1");
    assert_eq!(etag.as_deref(), Some(report.version.as_str()));
    let (status, _, body) = api.get("/v1/status", Some(&report.version)).await;
    assert_eq!((status, body.len()), (304, 0));
    assert_eq!(api.get("/v1/status?wait=never", None).await.0, 400);

    let poll = {
        let api = api.clone();
        let v = report.version.clone();
        tokio::spawn(async move { api.get("/v1/status?wait=30s", Some(&v)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!poll.is_finished(), "waits for a new version");
    publish_status(&api, "x.2");
    let (status, etag, body) = poll.await.unwrap();
    assert_eq!((status, etag.as_deref()), (200, Some("x.2")));
    let next: StatusReport = serde_json::from_slice(&body).unwrap();
    assert_eq!(next.version, "x.2");
}

#[tokio::test]
async fn the_status_stream_sends_the_document_then_every_new_version() {
    use http_body_util::BodyExt;
    let api = start(MAX_WAIT).await;
    let first = api.status.borrow().version().to_string();
    let url = format!("http://{}/v1/status/events", api.addr);
    let resp = api
        .client
        .get(&url, &[], Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut text = String::new();
    // Reads until `n` whole events (blank-line terminated) have arrived.
    async fn events(body: &mut hyper::body::Incoming, text: &mut String, n: usize) {
        while text.matches("\n\n").count() < n {
            let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                .await
                .expect("an event within 10s")
                .unwrap()
                .unwrap();
            if let Some(data) = frame.data_ref() {
                text.push_str(&String::from_utf8_lossy(data));
            }
        }
    }
    events(&mut body, &mut text, 1).await;
    assert!(text.starts_with("event: status\n"), "{text}");
    assert!(text.contains(&format!("id: {first}\n")), "{text}");
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let report: StatusReport = serde_json::from_str(data).unwrap();
    assert_eq!(report.version, first);

    publish_status(&api, "x.2");
    events(&mut body, &mut text, 2).await;
    assert!(text.contains("id: x.2\n"), "{text}");
}

#[tokio::test]
async fn the_page_comes_from_the_binary_under_a_strict_csp() {
    let api = start(MAX_WAIT).await;
    let url = |path: &str| format!("http://{}{path}", api.addr);
    let (resp, body) = api
        .client
        .get_body(&url("/ui/"), &[], Duration::from_secs(10), 1 << 20)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"));
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let html = String::from_utf8_lossy(&body);
    // Nothing inline that the CSP would have to allow.
    assert!(html.contains("<script src=\"app.js\" defer></script>"));
    assert_eq!(html.matches("<script").count(), 1);
    assert!(!html.contains("<style") && !html.contains(" style=") && !html.contains(" onload="));

    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let (again, _) = api
        .client
        .get_body(
            &url("/ui/"),
            &[("if-none-match", &etag)],
            Duration::from_secs(10),
            1 << 20,
        )
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    for (path, kind) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let (resp, body) = api
            .client
            .get_body(&url(path), &[], Duration::from_secs(10), 1 << 20)
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
        assert!(!body.is_empty());
    }
    for path in ["/ui", "/"] {
        let (resp, _) = api
            .client
            .get_body(&url(path), &[], Duration::from_secs(10), 1 << 20)
            .await
            .unwrap();
        assert_eq!(resp.status(), 308, "{path}");
        assert_eq!(resp.headers()["location"], "/ui/");
    }
}

/// A controller that has just started has no verdicts: it answers no table (503, and
/// the filter keeps the one it holds) until its first round of checks is done; a
/// long-poll waits for that round instead.
#[tokio::test]
async fn no_table_before_the_first_round_of_checks() {
    let api = start(MAX_WAIT).await;
    api.ready.store(false, Ordering::Release);
    let (status, _, body) = api.get("/v1/tables/east", None).await;
    assert_eq!(status, 503);
    assert!(
        String::from_utf8_lossy(&body).contains("first round of health checks"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // A long-poll that ends before the round does: 503 too, never a 304 that would
    // confirm a table nobody has checked.
    let (status, _, _) = api.get("/v1/tables/east?wait=100ms", Some("old")).await;
    assert_eq!(status, 503);
    // A long-poll for the table the Envoy held before the restart waits for the round,
    // and is answered by its tables at once.
    let held = table("east", "held");
    let waiting = {
        let uri = format!("http://{}/v1/tables/east?wait=10s", api.addr);
        let client = api.client.clone();
        let version = format!("\"{}\"", held.version());
        tokio::spawn(async move {
            let (resp, _) = client
                .get_body(
                    &uri,
                    &[("if-none-match", version.as_str())],
                    Duration::from_secs(20),
                    1 << 20,
                )
                .await
                .unwrap();
            (resp.status().as_u16(), Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "answered before the first round");
    let checked = table("east", "checked");
    let published = Instant::now();
    api.ready.store(true, Ordering::Release);
    api.tables.send_replace(set(&[checked]));
    let (status, at) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert!(at >= published);
}
