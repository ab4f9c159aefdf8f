//! Certificates for the tests: `detour certs init` run for real, mTLS clients, and
//! certificates the federation would never issue (another CA's, expired ones), made
//! with the same library.

use super::{detour, stderr};
use detour::client::{Connections, HttpClient};
use detour::tls::config::{TlsFiles, client_config, server_config};
use detour::tls::server::{Peer, TlsListener};
use detour_core::pki::identity::Identity;
use detour_core::pki::issue::{CertAuthority, LeafSpec};
use detour_core::pki::layout::Layout;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub const DAY: Duration = Duration::from_secs(86_400);

/// A `detour certs init` directory.
pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    /// Runs `detour certs init --config CONFIG --out (new temp dir)`.
    pub fn init(config: &Path) -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let out = detour(&[
            "certs",
            "init",
            "--config",
            config.to_str().unwrap(),
            "--out",
            dir.path().to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        Certs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn str(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    pub fn layout(&self) -> Layout {
        Layout::new(self.dir.path())
    }

    /// The files of `identity`, with the federation CA to verify servers.
    pub fn files(&self, identity: &Identity) -> TlsFiles {
        let pair = self.layout().leaf(identity);
        TlsFiles {
            cert: pair.cert,
            key: pair.key,
            ca: self.layout().ca().cert,
        }
    }

    /// An HTTPS client presenting `identity`'s certificate.
    pub fn client(&self, identity: &Identity) -> HttpClient {
        HttpClient::tls(
            client_config(&self.files(identity)).unwrap(),
            Connections::Fresh,
        )
    }

    /// An HTTPS client that trusts the federation CA but has no certificate.
    pub fn client_without_certificate(&self) -> HttpClient {
        let roots = detour::tls::files::read_roots(&self.layout().ca().cert).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(detour::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        HttpClient::tls(config, Connections::Fresh)
    }

    /// The federation's CA, as `certs init` left it.
    pub fn ca(&self) -> CertAuthority {
        let pair = self.layout().ca();
        CertAuthority::from_pem(
            &std::fs::read_to_string(pair.cert).unwrap(),
            &std::fs::read_to_string(pair.key).unwrap(),
        )
        .unwrap()
    }

    /// A client whose certificate says `identity` but comes from another CA.
    pub fn foreign_client(&self, identity: &Identity, dir: &Path) -> HttpClient {
        let now = SystemTime::now();
        let other = CertAuthority::generate(DAY, now).unwrap();
        let leaf = other
            .issue(&LeafSpec::new(identity.clone(), vec![]), DAY, now)
            .unwrap();
        self.client_with(&leaf, dir, "foreign")
    }

    /// A client with a federation certificate for `identity` that expired yesterday.
    pub fn expired_client(&self, identity: &Identity, dir: &Path) -> HttpClient {
        let now = SystemTime::now();
        let leaf = self
            .ca()
            .issue_between(
                &LeafSpec::new(identity.clone(), vec![]),
                now - 10 * DAY,
                now - DAY,
            )
            .unwrap();
        self.client_with(&leaf, dir, "expired")
    }

    fn client_with(
        &self,
        leaf: &detour_core::pki::issue::Issued,
        dir: &Path,
        stem: &str,
    ) -> HttpClient {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &leaf.cert_pem).unwrap();
        std::fs::write(&key, &leaf.key_pem).unwrap();
        let files = TlsFiles {
            cert,
            key,
            ca: self.layout().ca().cert,
        };
        HttpClient::tls(client_config(&files).unwrap(), Connections::Fresh)
    }
}

/// A stand-in east-west gateway over mTLS: presents `identity`'s certificate, requires
/// a client certificate from the federation CA, answers `name` with a settable status,
/// and remembers the identity of every client.
pub struct TlsGateway {
    pub addr: SocketAddr,
    pub status: Arc<std::sync::atomic::AtomicU16>,
    pub clients: Arc<Mutex<Vec<Option<Identity>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsGateway {
    pub async fn start(
        listener: tokio::net::TcpListener,
        files: &TlsFiles,
        name: &'static str,
    ) -> TlsGateway {
        use axum::extract::{ConnectInfo, State};
        use axum::http::StatusCode;
        let addr = listener.local_addr().unwrap();
        let config = Arc::new(server_config(files).unwrap());
        let (_keep, rx) = tokio::sync::watch::channel(config);
        let metrics = Arc::new(detour::metrics::Metrics::new());
        let tls = TlsListener::new(listener, rx, metrics).unwrap();
        let status = Arc::new(std::sync::atomic::AtomicU16::new(200));
        let clients: Arc<Mutex<Vec<Option<Identity>>>> = Arc::default();
        type S = (
            Arc<std::sync::atomic::AtomicU16>,
            Arc<Mutex<Vec<Option<Identity>>>>,
        );
        let app =
            axum::Router::new()
                .fallback(
                    move |State((status, clients)): State<S>,
                          ConnectInfo(peer): ConnectInfo<Peer>| async move {
                        clients.lock().unwrap().push(peer.identity);
                        let code = status.load(std::sync::atomic::Ordering::Relaxed);
                        (StatusCode::from_u16(code).unwrap(), name)
                    },
                )
                .with_state((status.clone(), clients.clone()));
        let task = tokio::spawn(async move {
            let _keep = _keep;
            let _ = axum::serve(tls, app.into_make_service_with_connect_info::<Peer>()).await;
        });
        TlsGateway {
            addr,
            status,
            clients,
            task,
        }
    }
}

impl Drop for TlsGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every file under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}
