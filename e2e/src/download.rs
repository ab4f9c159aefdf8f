//! A large download read as it streams, never held whole: its byte count and checksum,
//! compared with what the upstream's `?download=N` sends
//! ([`download_byte`](crate::upstream::download_byte)).

use crate::runtime::block_on;
use crate::upstream::download_byte;
use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// FNV-1a, 64 bits: enough to tell a lost, repeated or reordered chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checksum(pub u64);

impl Default for Checksum {
    fn default() -> Checksum {
        Checksum(0xcbf2_9ce4_8422_2325)
    }
}

impl Checksum {
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The checksum of the first `n` bytes of `?download=N`.
pub fn expected_checksum(n: u64) -> Checksum {
    let mut sum = Checksum::default();
    let bytes: Vec<u8> = (0..n).map(download_byte).collect();
    sum.update(&bytes);
    sum
}

/// What arrived.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub status: u16,
    pub served_by: Option<String>,
    pub bytes: u64,
    pub checksum: Checksum,
    pub took: Duration,
}

/// `GET path` over HTTP/1.1 at `addr` with `Host: authority`, read chunk by chunk;
/// `on_chunk` sees the running byte count (e.g. to sample a process's memory midway).
pub fn download(
    addr: SocketAddr,
    authority: &str,
    path: &str,
    timeout: Duration,
    mut on_chunk: impl FnMut(u64) + Send,
) -> Result<Downloaded> {
    let started = Instant::now();
    let exchange = async {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(hyper::header::HOST, authority)
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let served_by = response
            .headers()
            .get(crate::client::SERVED_BY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = response.into_body();
        let (mut bytes, mut checksum) = (0u64, Checksum::default());
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                checksum.update(&data);
                bytes += data.len() as u64;
                on_chunk(bytes);
            }
        }
        Ok::<_, anyhow::Error>(Downloaded {
            status,
            served_by,
            bytes,
            checksum,
            took: started.elapsed(),
        })
    };
    block_on(async {
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| anyhow!("GET {path} not downloaded within {timeout:?}"))?
    })?
}
