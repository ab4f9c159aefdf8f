//! The certificates of an mTLS topology: `detour certs init` run for real into the
//! test's output directory, the file names it writes (docs/internals.md, "mTLS"), and
//! rustls configurations made from them for the harness's own TLS parties (a table
//! client per member cluster, the fake controller's server).
//!
//! This is the only place in the harness that knows the layout of `certs init`.

use crate::controller::Detour;
use anyhow::{Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A certificate file and its key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a member cluster's certificate is for (`clusters/C/<role>.{crt,key}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterRole {
    /// Its east-west gateway (server).
    Gateway,
    /// Its Envoy calling other clusters' gateways (client).
    Envoy,
    /// Its Envoy fetching its table (client).
    Table,
}

impl ClusterRole {
    fn stem(self) -> &'static str {
        match self {
            ClusterRole::Gateway => "gateway",
            ClusterRole::Envoy => "envoy",
            ClusterRole::Table => "table",
        }
    }
}

/// A `detour certs init` output directory.
#[derive(Debug, Clone)]
pub struct Certs {
    root: PathBuf,
}

impl Certs {
    /// Runs `detour certs init --config CONFIG --out OUT`.
    pub fn init(detour: &Detour, config: &Path, out: &Path) -> Result<Certs> {
        detour.certs_init(config, out)?;
        Ok(Certs {
            root: out.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The federation CA every party trusts.
    pub fn ca(&self) -> PathBuf {
        self.root.join("ca.crt")
    }

    pub fn cluster(&self, cluster: &str, role: ClusterRole) -> Pair {
        let dir = self.root.join("clusters").join(cluster);
        Pair {
            cert: dir.join(format!("{}.crt", role.stem())),
            key: dir.join(format!("{}.key", role.stem())),
        }
    }

    /// The controller's table API certificate (what a fake controller presents).
    pub fn controller_server(&self) -> Pair {
        Pair {
            cert: self.root.join("controller/server.crt"),
            key: self.root.join("controller/server.key"),
        }
    }

    /// A client presenting `pair`, trusting servers from the federation CA that name
    /// the address connected to (the controller's certificate names 127.0.0.1).
    pub fn client_config(&self, pair: &Pair) -> Result<ClientConfig> {
        let (chain, key) = read_pair(pair)?;
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(chain, key)
            .with_context(|| format!("client certificate {}", pair.cert.display()))
    }

    /// A server presenting `pair` that, like the controller's table API, completes a
    /// handshake only with a client certificate from the federation CA.
    pub fn server_config(&self, pair: &Pair) -> Result<ServerConfig> {
        let (chain, key) = read_pair(pair)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
            .build()
            .context("client certificate verifier")?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .with_context(|| format!("server certificate {}", pair.cert.display()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    fn roots(&self) -> Result<Arc<RootCertStore>> {
        let ca = self.ca();
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&ca)
            .with_context(|| format!("reading {}", ca.display()))?
        {
            roots
                .add(cert.with_context(|| format!("{}: not PEM", ca.display()))?)
                .with_context(|| format!("{}: not a CA certificate", ca.display()))?;
        }
        Ok(Arc::new(roots))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pair(pair: &Pair) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = CertificateDer::pem_file_iter(&pair.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading {}", pair.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&pair.key)
        .with_context(|| format!("reading {}", pair.key.display()))?;
    Ok((chain, key))
}
