//! HTTP/1.1 over a bare TCP socket, for requests no well-behaved client sends:
//! a `Content-Length` the body never reaches, a half-closed connection.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw answer: the status and the body parsed as JSON (`Null` if it is not).
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub body: serde_json::Value,
}

/// Writes `head` (request line and headers, without the blank line) and
/// `body`, half-closes the connection, and reads the answer to its end.
pub async fn send_then_half_close(
    addr: SocketAddr,
    head: &str,
    body: &[u8],
) -> anyhow::Result<RawAnswer> {
    let mut socket = TcpStream::connect(addr).await?;
    socket
        .write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    socket.write_all(body).await?;
    socket.shutdown().await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), socket.read_to_end(&mut raw))
        .await
        .context("no answer within 30 s")??;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(serde_json::Value::Null);
    Ok(RawAnswer { status, body })
}
