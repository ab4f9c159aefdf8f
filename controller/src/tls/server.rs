//! The table API over mTLS: a listener for `axum::serve` that completes each TLS
//! handshake before handing the connection over, and the [`Peer`] it yields, which
//! carries the identity of the client's certificate to the handlers.
//!
//! Handshakes run in their own tasks (one slow or silent client cannot hold up the
//! others) and each uses the newest server configuration, so renewed certificates take
//! effect for new connections without a restart.

use crate::metrics::Metrics;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use detour_core::pki::identity::Identity;
use rustls::ServerConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info};

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client of one connection: its address and, over mTLS, the detour identity of
/// its certificate (`None` when the certificate, though from the CA, names none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    pub identity: Option<Identity>,
}

/// Accepts TCP connections and yields only those whose TLS handshake succeeded.
pub struct TlsListener {
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl TlsListener {
    pub fn new(
        listener: TcpListener,
        config: watch::Receiver<Arc<ServerConfig>>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, handshaken) = mpsc::channel(64);
        let task = tokio::spawn(accept_forever(listener, config, tx, metrics));
        Ok(TlsListener {
            handshaken,
            local,
            task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_forever(
    listener: TcpListener,
    config: watch::Receiver<Arc<ServerConfig>>,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    metrics: Arc<Metrics>,
) {
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(config.borrow().clone());
        let tx = tx.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, addr)).await;
                }
                Ok(Err(e)) => {
                    metrics.tls_handshake_failures.inc();
                    // rustls' reasons ("peer sent no certificates", "invalid peer
                    // certificate: UnknownIssuer") never include certificate contents.
                    info!(peer = %addr, error = %e, "TLS handshake refused");
                }
                Err(_) => {
                    metrics.tls_handshake_failures.inc();
                    info!(peer = %addr, "TLS handshake timed out");
                }
            }
        });
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(conn) => conn,
            // The accept task only ends when aborted, which happens on drop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl Peer {
    /// The client of an established mTLS connection.
    pub fn of_connection(tls: &TlsStream<TcpStream>, addr: SocketAddr) -> Peer {
        let (_, conn) = tls.get_ref();
        let identity = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| Identity::of_certificate(leaf));
        Peer { addr, identity }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        Peer::of_connection(stream.io(), *stream.remote_addr())
    }
}
