//! TLS for the controller's own clients: health probes through the gateways (the
//! controller's probe certificate) and `detour explain --controller` (a cluster's table
//! certificate).

use super::config::{TlsConfigError, TlsFiles, client_config};
use super::reload::load_and_watch;
use crate::client::{Connections, HttpClient};
use detour_core::pki::identity::{ClusterRole, ControllerRole};
use detour_core::pki::layout::{Layout, Pair};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::warn;

/// The probe's files in a `certs init` directory.
pub fn probe_files(layout: &Layout) -> TlsFiles {
    pair_files(layout, layout.controller(ControllerRole::Probe))
}

/// `pair` of a `certs init` directory, verifying peers against what it trusts
/// ([`trusted`]).
pub fn pair_files(layout: &Layout, pair: Pair) -> TlsFiles {
    TlsFiles {
        cert: pair.cert,
        key: pair.key,
        ca: trusted(layout),
    }
}

/// What to verify peers against: every CA of [`Layout::trust`] (two during a change of
/// CA), or `ca.crt` in a directory made before `certs init` wrote it.
pub fn trusted(layout: &Layout) -> PathBuf {
    let trust = layout.trust();
    if trust.exists() {
        trust
    } else {
        layout.ca().cert
    }
}

/// Cluster `cluster`'s table-fetching files in a `certs init` directory.
pub fn table_files(layout: &Layout, cluster: &str) -> TlsFiles {
    pair_files(layout, layout.cluster(cluster, ClusterRole::Table))
}

/// An HTTP client presenting `files.cert` to servers of `files.ca`.
pub fn mtls_client(
    files: &TlsFiles,
    connections: Connections,
) -> Result<HttpClient, TlsConfigError> {
    Ok(HttpClient::tls(client_config(files)?, connections))
}

/// For each member cluster of the `certs init` directory `layout` with an Envoy
/// certificate (`clusters/C/envoy.{crt,key}`), an mTLS client presenting it, rebuilt when
/// the files change: what the probes present for C's schemes. A cluster whose files
/// cannot be used now is left out (its checks present the probe certificate) and named
/// in the log.
pub fn envoy_clients(
    layout: &Layout,
    interval: std::time::Duration,
) -> BTreeMap<String, watch::Receiver<Arc<HttpClient>>> {
    let mut out = BTreeMap::new();
    let Ok(clusters) = std::fs::read_dir(layout.root().join("clusters")) else {
        return out;
    };
    for entry in clusters.flatten() {
        let cluster = entry.file_name().to_string_lossy().into_owned();
        let pair = layout.cluster(&cluster, ClusterRole::Envoy);
        if !pair.cert.exists() {
            continue;
        }
        let files = pair_files(layout, pair);
        let build = {
            let files = files.clone();
            move || mtls_client(&files, Connections::Reused)
        };
        match load_and_watch(
            "an Envoy's client certificate",
            files.all(),
            interval,
            build,
        ) {
            Ok(clients) => {
                out.insert(cluster, clients);
            }
            Err(e) => {
                warn!(%cluster, error = %e, "probes for this cluster's schemes present the probe certificate")
            }
        }
    }
    out
}
