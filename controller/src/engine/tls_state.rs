//! The controller's TLS settings in force: a rustls server config that
//! demands a client certificate from the configured CA, rebuilt by the
//! reload (`reload.rs`) whenever the certificate, key or CA files change, so
//! renewed files are picked up without a restart. The listeners' acceptor
//! (`api/tls.rs`) reads it for every handshake; it lives here, below both.

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::TlsFiles;

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

    /// The config a new handshake uses.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
