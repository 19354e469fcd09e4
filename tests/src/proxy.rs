//! A TCP proxy the fault tests put between an agent and the controller, to
//! cut, black-hole or delay the link on command (DESIGN §10).
//!
//! - `Pass`: bytes flow both ways.
//! - `Cut`: every open connection is closed at once (both sides see a reset
//!   or EOF); new connections are accepted and closed.
//! - `BlackHole`: bytes are read and thrown away, nothing is closed: both
//!   sides see silence, as with a dead route. Connections black-holed are
//!   closed when the link heals (their streams are corrupt by then), so the
//!   agent reconnects, as it would after a real outage.
//! - `Delay(d)`: every chunk is held for `d` before it is forwarded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with the link now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    Pass,
    Cut,
    BlackHole,
    Delay(Duration),
}

pub struct Proxy {
    port: u16,
    mode: watch::Sender<LinkMode>,
    /// Bumped to close every open connection.
    generation: watch::Sender<u64>,
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream_port`.
    pub async fn start(upstream_port: u16) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let port = listener.local_addr()?.port();
        let (mode, mode_rx) = watch::channel(LinkMode::Pass);
        let (generation, generation_rx) = watch::channel(0u64);
        let connections = Arc::new(AtomicU64::new(0));
        let counted = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::Relaxed);
                let (mode, generation) = (mode_rx.clone(), generation_rx.clone());
                tokio::spawn(async move {
                    if *mode.borrow() == LinkMode::Cut {
                        return; // dropped: closed at once
                    }
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", upstream_port)).await
                    else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    let mut closing = generation.clone();
                    let born = *closing.borrow_and_update();
                    tokio::select! {
                        _ = pump(in_read, out_write, mode.clone()) => {}
                        _ = pump(out_read, in_write, mode) => {}
                        _ = async {
                            while closing.changed().await.is_ok() {
                                if *closing.borrow() != born { return; }
                            }
                        } => {}
                    }
                });
            }
        });
        Ok(Proxy {
            port,
            mode,
            generation,
            connections,
            task,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far (each reconnect of the agent is one).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn set(&self, mode: LinkMode) {
        let previous = *self.mode.borrow();
        let _ = self.mode.send(mode);
        let closes_open = mode == LinkMode::Cut
            || (previous == LinkMode::BlackHole && mode != LinkMode::BlackHole);
        if closes_open {
            self.generation.send_modify(|g| *g += 1);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}

/// Copies one direction, obeying the mode chunk by chunk.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: watch::Receiver<LinkMode>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = *mode.borrow();
        match now {
            LinkMode::Pass => {}
            LinkMode::Cut => return,
            LinkMode::BlackHole => continue,
            LinkMode::Delay(delay) => tokio::time::sleep(delay).await,
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
