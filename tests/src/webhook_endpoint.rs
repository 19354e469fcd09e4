//! A local HTTP endpoint standing in for a Slack or webhook receiver: it
//! answers every request with one status and hands each request's path and
//! JSON body to the test.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long a notification may take to arrive once its cause happened.
pub const DELIVERY: Duration = Duration::from_secs(10);

/// A local HTTP endpoint: answers every request with `status` and forwards
/// each request's path and JSON body over a channel.
pub struct Endpoint {
    pub url: String,
    requests: mpsc::UnboundedReceiver<(String, Value)>,
}

impl Endpoint {
    pub async fn start(status: u16) -> Result<Endpoint> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (sender, requests) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sender = sender.clone();
                tokio::spawn(async move {
                    if let Ok(request) = read_request(stream, status).await {
                        let _ = sender.send(request);
                    }
                });
            }
        });
        Ok(Endpoint { url, requests })
    }

    /// The next request's body, within [`DELIVERY`].
    pub async fn next(&mut self) -> Result<(String, Value)> {
        tokio::time::timeout(DELIVERY, self.requests.recv())
            .await
            .context("no notification arrived in time")?
            .context("the endpoint stopped")
    }
}

async fn read_request(mut stream: TcpStream, status: u16) -> Result<(String, Value)> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 8192];
    let (head_end, length) = loop {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            bail!("connection closed mid-request");
        }
        data.extend_from_slice(&buffer[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
    };
    while data.len() < head_end + length {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            bail!("connection closed mid-body");
        }
        data.extend_from_slice(&buffer[..n]);
    }
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let body = serde_json::from_slice(&data[head_end..head_end + length])?;
    let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    stream.write_all(reply.as_bytes()).await?;
    Ok((path, body))
}
