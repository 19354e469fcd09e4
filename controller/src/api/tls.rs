//! The controller's TLS: a rustls server config that demands a client
//! certificate from the configured CA, rebuilt whenever the certificate, key
//! or CA files change, so renewed files are picked up without a restart.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use futures_util::Stream;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use super::expiring_stream::ExpiringStream;
use crate::config::TlsFiles;

/// A TLS handshake that has not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the server config from the files: mutual TLS, client certificates
/// verified against the CA, ALPN h2 for gRPC.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<ServerConfig> {
    use pgrollout_shared::tls;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in tls::load_certs(&files.ca)? {
        roots.add(ca).map_err(|e| {
            anyhow::anyhow!("CA certificate {} is unusable: {e}", files.ca.display())
        })?;
    }
    let certs = tls::load_certs(&files.cert)?;
    if let Some(leaf) = certs.first() {
        let info = tls::inspect(leaf)?;
        tls::check_validity(&files.cert, &info, SystemTime::now())?;
    }
    let key = tls::load_private_key(&files.key)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| {
            anyhow::anyhow!("cannot verify clients with CA {}: {e}", files.ca.display())
        })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            anyhow::anyhow!(
                "certificate {} and key {} do not fit: {e}",
                files.cert.display(),
                files.key.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The current server config; the reloader swaps it.
pub struct TlsState {
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsState {
    pub fn new(config: ServerConfig) -> Arc<Self> {
        Arc::new(TlsState {
            current: RwLock::new(Arc::new(config)),
        })
    }

    pub fn replace(&self, config: ServerConfig) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

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
                        tracing::warn!(%peer, %error, listener = listener_name, "TLS handshake refused")
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
