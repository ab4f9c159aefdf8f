//! HTTP/2 with prior knowledge (h2c): the client sends the HTTP/2 preface on a plain
//! TCP connection, with no HTTP/1.1 upgrade first, as gRPC and many service meshes do.

use crate::runtime::block_on;
use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::HeaderMap;
use hyper::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// One answer over HTTP/2.
#[derive(Debug, Clone)]
pub struct H2Reply {
    pub status: u16,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl H2Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `GET path` with `authority` as `:authority`, on a fresh h2c connection to `addr`.
pub fn get(addr: SocketAddr, authority: &str, path: &str, timeout: Duration) -> Result<H2Reply> {
    let uri = format!("http://{authority}{path}");
    let exchange = async {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .context("HTTP/2 handshake")?;
        tokio::spawn(connection);
        let request = Request::get(&uri)
            .version(Version::HTTP_2)
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, anyhow::Error>(H2Reply {
            status: parts.status.as_u16(),
            version: parts.version,
            headers: parts.headers,
            body,
        })
    };
    block_on(async {
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| anyhow!("no HTTP/2 answer to GET {uri} within {timeout:?}"))?
    })?
}
