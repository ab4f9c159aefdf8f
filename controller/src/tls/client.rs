//! TLS for the controller's own clients: health probes through the gateways (the
//! controller's probe certificate) and `detour explain --controller` (a cluster's table
//! certificate).

use super::config::{TlsConfigError, TlsFiles, client_config};
use crate::client::{Connections, HttpClient};
use detour_core::pki::identity::{ClusterRole, ControllerRole};
use detour_core::pki::layout::Layout;
use std::path::PathBuf;

/// The probe's files in a `certs init` directory.
pub fn probe_files(layout: &Layout) -> TlsFiles {
    let pair = layout.controller(ControllerRole::Probe);
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
    let pair = layout.cluster(cluster, ClusterRole::Table);
    TlsFiles {
        cert: pair.cert,
        key: pair.key,
        ca: trusted(layout),
    }
}

/// An HTTP client presenting `files.cert` to servers of `files.ca`.
pub fn mtls_client(
    files: &TlsFiles,
    connections: Connections,
) -> Result<HttpClient, TlsConfigError> {
    Ok(HttpClient::tls(client_config(files)?, connections))
}
