//! Serving connections with limits: every listener (plain or mTLS) closes a connection
//! that has not sent a whole request head within the header-read timeout (slow headers,
//! a silent or idle keep-alive connection: hyper's `header_read_timeout`), and one on
//! which no byte moved either way for the idle timeout (a client that stopped reading
//! an answer or an event stream). Each connection is its own task, so neither kind holds
//! up another client; long waits are capped apart ([`super::caps`]).
//!
//! The servers speak HTTP/1.1 only, as the TLS listener's ALPN says: hyper's automatic
//! HTTP/2 detection reads the first bytes with no deadline (a silent connection would
//! stay open until the idle timeout), and HTTP/2 has no header-read timeout at all.

use crate::tls::server::Peer;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tower_service::Service;
use tracing::{debug, warn};

/// The timeouts of every connection of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// A request head (request line and headers) must arrive whole within this, counted
    /// from the connection's start or the end of its previous request.
    pub header_read_timeout: Duration,
    /// A connection on which nothing was read or written for this long is closed. It
    /// must exceed the longest long-poll (`--max-wait`), which is silent while it waits.
    pub idle_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
        }
    }
}

/// How long shutdown waits for open requests (event streams and long-polls end at once
/// on shutdown; this bounds a client that stopped reading).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown` completes; `peer` names each
/// connection's client for the handlers (`ConnectInfo<Peer>` as a request extension).
pub(super) async fn serve_with_limits<L>(
    mut listener: L,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    peer: impl Fn(&L::Io, &L::Addr) -> Option<Peer>,
) -> io::Result<()>
where
    L: Listener,
    L::Io: Unpin,
{
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let peer = peer(&io, &addr);
        let io = TokioIo::new(Idle::new(io, limits.idle_timeout));
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            if let Some(peer) = &peer {
                req.extensions_mut().insert(ConnectInfo(peer.clone()));
            }
            let mut router = router.clone();
            async move { router.call(req).await }
        });
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            if let Err(e) = watcher.watch(builder.serve_connection(io, service)).await {
                debug!(error = %e, "connection closed");
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("shutting down with requests still open");
    }
    Ok(())
}

/// A connection that fails with `TimedOut` once nothing was read or written on it for
/// `timeout` while it is being read or written.
struct Idle<T> {
    io: T,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<T> Idle<T> {
    fn new(io: T, timeout: Duration) -> Idle<T> {
        Idle {
            io,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn moved(&mut self) {
        let next = Instant::now() + self.timeout;
        self.deadline.as_mut().reset(next);
    }

    /// On `Pending`: an error once the deadline has passed (and a wake-up for it).
    fn pending<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for longer than the idle timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Idle<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.moved();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.pending(cx),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Idle<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.moved();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.pending(cx),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this.pending(cx),
            done => done,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
