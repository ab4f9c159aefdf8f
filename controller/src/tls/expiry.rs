//! When the federation's certificates expire: read from a `detour certs init` directory
//! (every certificate an Envoy or the controller loads comes from there) and reported
//! as `detour_certificate_expiry_seconds` and on the status page, which warns under
//! [`EXPIRY_WARNING`]. A renewal that never reached the files, or a `certs init` that
//! stopped running, shows here days before a handshake fails.
//!
//! [`EXPIRY_WARNING`]: detour_core::report::EXPIRY_WARNING

use super::files::read_certs;
use super::reload::{Stamp, stamps};
use crate::metrics::{CertificateLabels, Metrics};
use detour_core::pki::identity::Identity;
use detour_core::pki::layout::Layout;
use detour_core::report::CertificateReport;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tracing::warn;
use x509_parser::prelude::{FromDer, X509Certificate};

/// One certificate file's expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// Relative to the certificate directory.
    pub file: String,
    /// Its detour identity's URI, or `CA` for the federation CA.
    pub identity: String,
    pub not_after: SystemTime,
}

/// Every certificate of the directory `layout`: the CA, the controller's and every
/// member cluster's (`clusters/*/*.crt`), sorted by file. A file that cannot be read
/// is left out (its reader reports it by name); its absence from the metric says so.
pub fn scan(layout: &Layout) -> Vec<Expiry> {
    read(layout, &cert_files(layout))
}

/// The certificate files of the directory `layout` (listed, not read).
fn cert_files(layout: &Layout) -> Vec<PathBuf> {
    // During a change of CA the other one is trusted too, and may expire first.
    let mut files = vec![
        layout.ca().cert,
        layout.ca_next().cert,
        layout.ca_previous(),
    ];
    files.retain(|f| f.exists());
    files.extend(crt_files(&layout.root().join("controller")));
    if let Ok(clusters) = std::fs::read_dir(layout.root().join("clusters")) {
        for cluster in clusters.flatten() {
            files.extend(crt_files(&cluster.path()));
        }
    }
    files
}

/// The expiry of each of `files`, sorted by file.
fn read(layout: &Layout, files: &[PathBuf]) -> Vec<Expiry> {
    let mut out: Vec<Expiry> = files.iter().filter_map(|f| expiry(layout, f)).collect();
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

fn crt_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect()
}

fn expiry(layout: &Layout, file: &Path) -> Option<Expiry> {
    // The first certificate of the file is the one presented (a chain's leaf).
    let der = read_certs(file).ok()?.into_iter().next()?;
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    let not_after = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(cert.validity().not_after.timestamp()).ok()?);
    let identity = match Identity::of_certificate(&der) {
        Some(id) => id.uri(),
        None => "CA".to_string(),
    };
    Some(Expiry {
        file: layout.relative(file).display().to_string(),
        identity,
        not_after,
    })
}

/// Sets the gauge to what `found` says at `now` (seconds left; negative once expired),
/// dropping files that are gone, and returns what the status page shows.
pub fn report(found: &[Expiry], metrics: &Metrics, now: SystemTime) -> Vec<CertificateReport> {
    metrics.certificate_expiry.clear();
    found
        .iter()
        .map(|e| {
            let left = match e.not_after.duration_since(now) {
                Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                Err(past) => -i64::try_from(past.duration().as_secs()).unwrap_or(i64::MAX),
            };
            metrics
                .certificate_expiry
                .get_or_create(&CertificateLabels {
                    file: e.file.clone(),
                    identity: e.identity.clone(),
                })
                .set(left);
            CertificateReport::new(e.file.clone(), e.identity.clone(), e.not_after, now)
        })
        .collect()
}

/// Reads `dir` now and every `every`, keeping the metric and `out` current.
pub async fn watch(
    dir: PathBuf,
    every: Duration,
    metrics: Arc<Metrics>,
    out: watch::Sender<Vec<CertificateReport>>,
) {
    let layout = Layout::new(dir);
    let mut warned = Vec::new();
    // The files are parsed again only when one of them (or the list) changed, or one
    // could not be read last time: the seconds left move every tick, the certificates
    // only when renewed.
    let mut seen: Option<(Vec<Stamp>, Vec<PathBuf>)> = None;
    let mut found = Vec::new();
    loop {
        let files = cert_files(&layout);
        let stamped = (stamps(&files), files);
        if seen.as_ref() != Some(&stamped) || found.len() != stamped.1.len() {
            found = read(&layout, &stamped.1);
            seen = Some(stamped);
        }
        let now = SystemTime::now();
        let reports = report(&found, &metrics, now);
        let expiring: Vec<String> = reports
            .iter()
            .filter(|r| r.expiring)
            .map(|r| format!("{} ({})", r.file, r.not_after))
            .collect();
        if !expiring.is_empty() && expiring != warned {
            warn!(
                certificates = %expiring.join(", "),
                "certificates expire within 7 days: run `detour certs init` to renew them"
            );
        }
        warned = expiring;
        out.send_if_modified(|current| {
            let changed = *current != reports;
            *current = reports;
            changed
        });
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::init::{InitOptions, default_controller_hosts, init};
    use detour_core::docs::load::parse_file;
    use detour_core::testing::EXAMPLE;
    use detour_core::validate::build_model;

    const DAY: Duration = Duration::from_secs(86_400);

    /// Each certificate's seconds left are a gauge labelled with its file and identity,
    /// and one under seven days is flagged for the status page.
    #[test]
    fn every_certificate_has_its_seconds_left_and_the_short_ones_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let (docs, problems) = parse_file("t.yaml", EXAMPLE);
        assert!(problems.is_empty());
        let model = build_model(&docs).unwrap();
        let now = SystemTime::now();
        let opts = InitOptions {
            out: dir.path().to_path_buf(),
            controller_hosts: default_controller_hosts(),
            ca_lifetime: 3650 * DAY,
            leaf_lifetime: 30 * DAY,
            ca_change: None,
        };
        init(&model, &opts, now).unwrap();
        let found = scan(&Layout::new(dir.path()));
        // The CA, 3 × 3 member certificates, the controller's 2.
        assert_eq!(found.len(), 12, "{found:?}");
        let west = found
            .iter()
            .find(|e| e.file == "clusters/west/gateway.crt")
            .unwrap();
        assert_eq!(west.identity, "spiffe://detour.dev/cluster/west/gateway");
        assert_eq!(found[0].file, "ca.crt");
        assert_eq!(found[0].identity, "CA");

        let metrics = Metrics::new();
        // 25 days on, every leaf has about 5 days left; the CA years.
        let later = now + 25 * DAY;
        let reports = report(&found, &metrics, later);
        let text = metrics.encode();
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("detour_certificate_expiry_seconds{")
                    && l.contains("file=\"clusters/west/gateway.crt\"")
                    && l.contains("identity=\"spiffe://detour.dev/cluster/west/gateway\"")
            })
            .unwrap_or_else(|| panic!("{text}"));
        let left: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((4 * 86_400..=5 * 86_400).contains(&left), "{line}");
        assert!(
            reports
                .iter()
                .filter(|r| r.file != "ca.crt")
                .all(|r| r.expiring)
        );
        assert!(
            !reports
                .iter()
                .find(|r| r.file == "ca.crt")
                .unwrap()
                .expiring
        );
        // Expired: negative, still there.
        report(&found, &metrics, now + 40 * DAY);
        assert!(metrics.encode().contains(
            "file=\"clusters/west/gateway.crt\",identity=\"spiffe://detour.dev/cluster/west/gateway\"} -"
        ));
        // Fresh: no warning.
        assert!(report(&found, &metrics, now).iter().all(|r| !r.expiring));
    }
}
