//! The listeners' TLS acceptor: every handshake uses the server config in
//! force (`engine::tls_state`, which the reload swaps).

use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use super::expiring_stream::ExpiringStream;
use crate::engine::tls_state::TlsState;

/// A TLS handshake that has not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TCP connections and completes each TLS handshake on its own task,
/// so one slow or hostile client cannot hold up the others. Each connection
/// ends when its client certificate expires (`expiring_stream.rs`). Failed
/// handshakes (no certificate, another CA) are logged with the peer address.
pub fn incoming(
    listener: TcpListener,
    state: Arc<TlsState>,
    listener_name: &'static str,
) -> impl Stream<Item = Result<ExpiringStream, std::io::Error>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, listener = listener_name, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            if sender.is_closed() {
                return;
            }
            let acceptor = TlsAcceptor::from(state.current());
            let sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(ExpiringStream::new(stream))).await;
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%peer, error = %pgrollout_shared::errors::error_chain(&error), listener = listener_name, "TLS handshake refused")
                    }
                    Err(_) => {
                        tracing::warn!(%peer, listener = listener_name, "TLS handshake timed out")
                    }
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}
