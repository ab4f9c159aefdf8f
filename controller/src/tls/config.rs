//! rustls configurations from files: the table API's server (client certificates
//! required, from the client CA) and the clients of gateways and of the controller (a
//! client certificate, servers verified against a CA).

use super::files::{FileError, Shown, read_pair, read_roots};
use super::provider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, ServerConfig};
use std::path::PathBuf;
use std::sync::Arc;

/// A certificate, its key, and the CA that the other side's certificate must come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    pub fn all(&self) -> Vec<PathBuf> {
        vec![self.cert.clone(), self.key.clone(), self.ca.clone()]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: cannot verify client certificates with it: {why}")]
    Verifier { path: Shown, why: String },
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The table API's server configuration: presents `files.cert`, and accepts only
/// clients with a certificate from `files.ca` (no certificate: the handshake fails).
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsConfigError> {
    let pair = read_pair(&files.cert, &files.key)?;
    let roots = read_roots(&files.ca)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsConfigError::Verifier {
            path: Shown(files.ca.clone()),
            why: e.to_string(),
        })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(pair)));
    // Envoy and the controller's clients speak HTTP/1.1 to the table API.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client configuration: presents `files.cert`, trusts servers whose certificate
/// comes from `files.ca` and names the host connected to.
pub fn client_config(files: &TlsFiles) -> Result<ClientConfig, TlsConfigError> {
    let pair = read_pair(&files.cert, &files.key)?;
    let roots = read_roots(&files.ca)?;
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(pair))))
}
