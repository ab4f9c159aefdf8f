//! A WebSocket client for the upstream's echo endpoint
//! ([`WEBSOCKET_PATH`](crate::upstream::WEBSOCKET_PATH)), through an ingress: the
//! handshake carries the service's `Host`, as a browser's would.

use crate::runtime::block_on;
use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// What one WebSocket session saw.
#[derive(Debug, Clone)]
pub struct Session {
    /// The handshake's answer status (101 when upgraded).
    pub status: u16,
    /// `x-served-by` of the handshake's answer.
    pub served_by: Option<String>,
    /// Every message echoed back, in order.
    pub echoed: Vec<String>,
}

/// Upgrades `GET path` at `addr` (with `Host: authority`), sends each of `messages` and
/// reads its echo before the next, then closes.
pub fn echo(
    addr: SocketAddr,
    authority: &str,
    path: &str,
    messages: &[&str],
    timeout: Duration,
) -> Result<Session> {
    let url = format!("ws://{authority}{path}");
    let session = async {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let request = url.as_str().into_client_request()?;
        let (mut ws, response) = tokio_tungstenite::client_async(request, tcp)
            .await
            .with_context(|| format!("WebSocket handshake for {url} at {addr}"))?;
        let mut echoed = Vec::new();
        for message in messages {
            ws.send(Message::text(*message)).await?;
            match ws.next().await {
                Some(Ok(Message::Text(text))) => echoed.push(text.to_string()),
                other => bail!("after sending {message:?}, got {other:?}"),
            }
        }
        // The echo is what is tested; a close the server does not complete is not.
        let _ = ws.close(None).await;
        Ok::<_, anyhow::Error>(Session {
            status: response.status().as_u16(),
            served_by: response
                .headers()
                .get(crate::client::SERVED_BY)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            echoed,
        })
    };
    block_on(async {
        tokio::time::timeout(timeout, session)
            .await
            .map_err(|_| anyhow!("WebSocket session at {url} not done within {timeout:?}"))?
    })?
}
