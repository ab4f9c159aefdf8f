//! Mutual TLS between clusters and to the controller, with certificates detour issues.
//!
//! Identities, issuance and the directory's layout are values in `detour_core::pki`;
//! here is what reads, writes and serves them:
//!
//! * [`init`] — `detour certs init`'s directory;
//! * [`files`] — reading PEM files with errors that name the file, writing keys 0600;
//! * [`server`] — the table API's rustls listener and the client identity it yields;
//! * [`config`] — rustls server and client configurations from files; [`reload`] —
//!   rebuilt when the files change;
//! * [`client`] — the mTLS clients of probes and `explain`;
//! * [`expiry`] — when each certificate expires, as a metric and on the status page.
//!
//! Everything uses rustls' `ring` provider, chosen explicitly (never the process
//! default), so another crate enabling another provider changes nothing here.

pub mod client;
pub mod config;
pub mod expiry;
pub mod files;
pub mod init;
pub mod reload;
pub mod server;

use rustls::crypto::CryptoProvider;
use std::sync::Arc;

/// The crypto provider of every TLS configuration detour makes.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
