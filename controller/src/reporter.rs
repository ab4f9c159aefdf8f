//! The status API's reporter: keeps its document current, rebuilding it from each
//! decision of the decision task (a new model, a target's health, a failback damping
//! window ending) and whenever the configuration's outcome changes, and publishing a new
//! version when the content differs. The HTTP handlers (`/v1/status`, its long-poll and
//! its event stream) only read the published value.

use bytes::Bytes;
use detour_core::decide::Decided;
use detour_core::health::HealthMap;
use detour_core::model::{Catalogue, Model};
use detour_core::report::events::EventLog;
use detour_core::report::tracker::{Inputs, Tracker};
use detour_core::report::{CertificateReport, ConfigState, StatusReport, rfc3339_ms};
use detour_core::tables::TableSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

/// Changes arriving this close together make one version: at start-up every target's
/// first check is a change of its own, and a page gains nothing from hundreds of
/// versions in a second.
const COALESCE: Duration = Duration::from_millis(50);

/// How often readiness is looked at until it is reached (it has no change signal of
/// its own).
const READY_POLL: Duration = Duration::from_secs(1);

/// One version of the document, serialised once for every reader.
#[derive(Debug)]
pub struct PublishedStatus {
    pub report: StatusReport,
    pub json: Bytes,
    /// The server-sent event carrying it, made when the first event stream asks and
    /// shared by every stream (the document can be megabytes, the streams dozens).
    event: OnceLock<Bytes>,
}

impl PublishedStatus {
    pub fn new(report: StatusReport) -> PublishedStatus {
        // Plain structs with string keys always serialise.
        let json = Bytes::from(serde_json::to_vec(&report).unwrap_or_default());
        PublishedStatus {
            report,
            json,
            event: OnceLock::new(),
        }
    }

    /// `event: status`, `id: <version>` and the document as one `data:` line (compact
    /// JSON has no line breaks), as an event stream carries it.
    pub fn event(&self) -> Bytes {
        self.event
            .get_or_init(|| {
                let mut frame = Vec::with_capacity(self.json.len() + 64);
                frame.extend_from_slice(b"event: status\nid: ");
                // A version is hex and dots: no line break to escape.
                frame.extend_from_slice(self.version().as_bytes());
                frame.extend_from_slice(b"\ndata: ");
                frame.extend_from_slice(&self.json);
                frame.extend_from_slice(b"\n\n");
                Bytes::from(frame)
            })
            .clone()
    }

    pub fn version(&self) -> &str {
        &self.report.version
    }
}

/// What the status task watches.
pub struct Feeds {
    /// The tables task's decisions: the model, the health and the views.
    pub decisions: watch::Receiver<Arc<Decided>>,
    /// The tables as published (their versions).
    pub tables: watch::Receiver<Arc<TableSet>>,
    /// The file source's word on each load; `None` in Kubernetes mode.
    pub config: watch::Receiver<Option<ConfigState>>,
    /// Every service of each member cluster (Kubernetes; empty with files, whose model
    /// lists them all).
    pub catalogue: watch::Receiver<Arc<Catalogue>>,
    pub ready: Arc<AtomicBool>,
    /// The certificates' expiry ([`crate::tls::expiry`]); empty without `--certs`.
    pub certificates: watch::Receiver<Vec<CertificateReport>>,
}

/// Versions are `<boot>.<n>`: `n` counts versions, and `boot` (the start time) keeps a
/// restarted controller's versions from matching the ones a client saw before.
pub struct Versions {
    boot: String,
    n: u64,
}

impl Versions {
    pub fn new(started: SystemTime) -> Versions {
        let ms = started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        Versions {
            boot: format!("{ms:x}"),
            n: 0,
        }
    }

    fn next(&mut self) -> String {
        self.n += 1;
        format!("{}.{}", self.boot, self.n)
    }
}

/// A channel holding an empty first version, until [`run`] publishes the real one.
/// `source` is `files` or `kubernetes`.
pub fn channel(
    versions: &mut Versions,
    source: &'static str,
) -> (
    watch::Sender<Arc<PublishedStatus>>,
    watch::Receiver<Arc<PublishedStatus>>,
) {
    let nothing = Decided::new(
        Arc::new(Model::default()),
        Arc::new(HealthMap::new()),
        Instant::now(),
        SystemTime::now(),
    );
    let mut report = Tracker::new(source, EventLog::default()).observe(&Inputs {
        decided: &nothing,
        tables: &TableSet::default(),
        config: None,
        ready: false,
        catalogue: None,
    });
    report.version = versions.next();
    report.generated_at = rfc3339_ms(SystemTime::now());
    watch::channel(Arc::new(PublishedStatus::new(report)))
}

/// Rebuilds and publishes until the decision or table feed closes.
pub async fn run(
    mut tracker: Tracker,
    mut feeds: Feeds,
    mut versions: Versions,
    out: watch::Sender<Arc<PublishedStatus>>,
) {
    let mut last: Option<StatusReport> = None;
    // Kubernetes mode has no config reports: a closed channel is final, not an end.
    let mut config_open = true;
    // Files never send one: the source drops its end, and that is no end either.
    let mut catalogue_open = true;
    // Without `--certs` nothing sends certificates.
    let mut certificates_open = true;
    let mut ready_poll = tokio::time::interval(READY_POLL);
    ready_poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let report = {
            let decided = feeds.decisions.borrow_and_update().clone();
            let tables = feeds.tables.borrow_and_update().clone();
            let config = feeds.config.borrow_and_update().clone();
            let catalogue = feeds.catalogue.borrow_and_update().clone();
            let mut report = tracker.observe(&Inputs {
                decided: &decided,
                tables: &tables,
                config: config.as_ref(),
                ready: feeds.ready.load(Ordering::Acquire),
                catalogue: Some(&catalogue),
            });
            report.controller.certificates = feeds.certificates.borrow_and_update().clone();
            report
        };
        if last.as_ref() != Some(&report) {
            let mut stamped = report.clone();
            stamped.version = versions.next();
            stamped.generated_at = rfc3339_ms(SystemTime::now());
            out.send_replace(Arc::new(PublishedStatus::new(stamped)));
            last = Some(report);
        }
        let waiting_for_ready = !feeds.ready.load(Ordering::Acquire);
        tokio::select! {
            r = feeds.decisions.changed() => if r.is_err() { return },
            r = feeds.tables.changed() => if r.is_err() { return },
            r = feeds.config.changed(), if config_open => config_open = r.is_ok(),
            r = feeds.catalogue.changed(), if catalogue_open => catalogue_open = r.is_ok(),
            r = feeds.certificates.changed(), if certificates_open => certificates_open = r.is_ok(),
            _ = ready_poll.tick(), if waiting_for_ready => {}
        }
        tokio::time::sleep(COALESCE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_and_carry_the_boot_time() {
        let mut v = Versions::new(SystemTime::UNIX_EPOCH + Duration::from_millis(0xabc));
        assert_eq!(v.next(), "abc.1");
        assert_eq!(v.next(), "abc.2");
        let (_tx, rx) = channel(&mut Versions::new(SystemTime::UNIX_EPOCH), "files");
        let first = rx.borrow().clone();
        assert_eq!(first.version(), "0.1");
        let parsed: StatusReport = serde_json::from_slice(&first.json).unwrap();
        assert_eq!(parsed, first.report);
        assert!(parsed.schemes.is_empty());
        assert_eq!(parsed.controller.source, "files");
    }

    #[test]
    fn a_version_is_one_event_shared_by_every_stream() {
        let (_tx, rx) = channel(&mut Versions::new(SystemTime::UNIX_EPOCH), "files");
        let status = rx.borrow().clone();
        let event = status.event();
        let text = String::from_utf8_lossy(&event);
        assert!(
            text.starts_with("event: status\nid: 0.1\ndata: {"),
            "{text}"
        );
        assert!(
            text.ends_with("}\n\n") && text.matches('\n').count() == 4,
            "{text}"
        );
        // The second stream gets the same bytes, not a copy.
        assert_eq!(status.event().as_ptr(), event.as_ptr());
    }
}
