//! One HTTP/1.1 request to a local listener (the controller's and agent's
//! `/metrics`, `/healthz`, `/readyz`) over a fresh connection, read to its
//! end: the whole head and the body, for the test to judge.

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `method path` on 127.0.0.1:`port`: the response's head (status line
/// first) and body.
pub async fn http_request(port: u16, method: &str, path: &str) -> Result<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let request =
        format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP head")?;
    Ok((head.to_owned(), body.to_owned()))
}
