//! TLS for the controller's own clients: health probes through the gateways (the
//! controller's probe certificate) and `detour explain --controller` (a cluster's table
//! certificate).

use super::config::{TlsConfigError, TlsFiles, client_config};
use crate::client::{Connections, HttpClient};
use detour_core::pki::identity::{ClusterRole, ControllerRole};
use detour_core::pki::layout::Layout;

/// The probe's files in a `certs init` directory.
pub fn probe_files(layout: &Layout) -> TlsFiles {
    let pair = layout.controller(ControllerRole::Probe);
    TlsFiles {
        cert: pair.cert,
        key: pair.key,
        ca: layout.ca().cert,
    }
}

/// Cluster `cluster`'s table-fetching files in a `certs init` directory.
pub fn table_files(layout: &Layout, cluster: &str) -> TlsFiles {
    let pair = layout.cluster(cluster, ClusterRole::Table);
    TlsFiles {
        cert: pair.cert,
        key: pair.key,
        ca: layout.ca().cert,
    }
}

/// An HTTP client presenting `files.cert` to servers of `files.ca`.
pub fn mtls_client(
    files: &TlsFiles,
    connections: Connections,
) -> Result<HttpClient, TlsConfigError> {
    Ok(HttpClient::tls(client_config(files)?, connections))
}
