//! TLS to a target database, as the target's `sslmode` asks: the rustls
//! client configuration for each mode, and an operator-facing account of a
//! failed handshake.
//!
//! The ring provider is passed explicitly to every configuration, so nothing
//! depends on a process-wide default provider having been installed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::config::{SslMode, TargetConfig};

/// Why the TLS settings of a target could not be turned into a client
/// configuration. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("sslmode = \"verify-ca\" and \"verify-full\" need sslrootcert, the CA file to verify the server with")]
    NoRootFile,
    #[error("cannot read sslrootcert {path}")]
    ReadRootFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sslrootcert {path} is not a valid PEM file")]
    ParseRootFile {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("sslrootcert {path} holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)")]
    NoRootCertificate { path: PathBuf },
    #[error("sslrootcert {path}: certificate {number} cannot be used as a trusted CA")]
    BadRootCertificate {
        path: PathBuf,
        number: usize,
        #[source]
        source: rustls::Error,
    },
    #[error("the TLS provider refused the default protocol versions")]
    Protocol(#[source] rustls::Error),
}

/// The rustls configuration for `target`, or `None` when its sslmode is
/// `disable`. For `verify-full` the CA file is read now, on every connect,
/// so a rotated file is used without restarting the agent.
pub(super) async fn client_config(
    target: &TargetConfig,
) -> Result<Option<ClientConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Protocol)?;
    let config = match target.sslmode {
        SslMode::Disable => return Ok(None),
        // libpq: no TLS over a Unix socket, which `prefer` accepts.
        SslMode::Prefer if target.host.starts_with('/') => return Ok(None),
        SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCertificate { provider }))
            .with_no_client_auth(),
        SslMode::VerifyCa => {
            let path = target
                .sslrootcert
                .as_deref()
                .ok_or(TlsSetupError::NoRootFile)?;
            let roots = Arc::new(read_root_certificates(path).await?);
            let chain = rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots,
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| TlsSetupError::Protocol(rustls::Error::General(e.to_string())))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly { chain }))
                .with_no_client_auth()
        }
        SslMode::VerifyFull => {
            let path = target
                .sslrootcert
                .as_deref()
                .ok_or(TlsSetupError::NoRootFile)?;
            builder
                .with_root_certificates(read_root_certificates(path).await?)
                .with_no_client_auth()
        }
    };
    Ok(Some(config))
}

async fn read_root_certificates(path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let pem = tokio::fs::read(path)
        .await
        .map_err(|source| TlsSetupError::ReadRootFile {
            path: path.to_owned(),
            source,
        })?;
    let mut roots = RootCertStore::empty();
    for (index, certificate) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let certificate = certificate.map_err(|source| TlsSetupError::ParseRootFile {
            path: path.to_owned(),
            source,
        })?;
        roots
            .add(certificate)
            .map_err(|source| TlsSetupError::BadRootCertificate {
                path: path.to_owned(),
                number: index + 1,
                source,
            })?;
    }
    if roots.is_empty() {
        return Err(TlsSetupError::NoRootCertificate {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// The rustls error behind a failed connection, if the handshake is what
/// failed, rendered for an operator with what to check next.
pub(super) fn describe_handshake_failure(
    error: &tokio_postgres::Error,
    target: &TargetConfig,
) -> Option<String> {
    let rustls_error = rustls_error_in(error)?;
    let mut text = format!("TLS handshake failed: {rustls_error}");
    let hint = match (rustls_error, &target.sslrootcert) {
        (rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer), Some(root)) => {
            Some(format!(
                "the server's certificate is not signed by a CA in sslrootcert {}",
                root.display()
            ))
        }
        (
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ),
            _,
        ) => Some(format!(
            "the server's certificate must name host {:?} in its subjectAltName",
            target.host
        )),
        _ => None,
    };
    if let Some(hint) = hint {
        text.push_str(&format!(" ({hint})"));
    }
    Some(text)
}

/// tokio-rustls reports a handshake failure as an `io::Error` wrapping the
/// `rustls::Error`; `io::Error::source` skips the wrapped error, so each
/// `io::Error` in the chain is opened explicitly.
fn rustls_error_in(error: &tokio_postgres::Error) -> Option<&rustls::Error> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(found) = cause.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(found) = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found);
        }
        source = cause.source();
    }
    None
}

/// `sslmode = "require"`, as libpq has it: the connection is encrypted but the
/// server's certificate is not checked, which protects against eavesdropping
/// but not against an active man in the middle. The handshake signatures are
/// still verified, so the server must hold the key of the certificate it sent.
#[derive(Debug)]
struct AnyServerCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `sslmode = "verify-ca"`, as libpq has it: the certificate must chain to
/// `sslrootcert`, but need not name the host. webpki checks the chain before
/// the name, so a name error means the chain was good.
#[derive(Debug)]
struct ChainOnly {
    chain: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.chain.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(sslmode: SslMode, sslrootcert: Option<PathBuf>) -> TargetConfig {
        TargetConfig {
            name: "main".into(),
            labels: Default::default(),
            host: "127.0.0.1".into(),
            port: 5432,
            dbname: "perseus".into(),
            user: "deployer".into(),
            password_env: None,
            password_file: None,
            passfile: None,
            ledger_schema: "pgrollout".into(),
            post_commit_connections: 1,
            sslmode,
            sslrootcert,
        }
    }

    async fn setup_error(sslrootcert: &Path) -> String {
        let target = target(SslMode::VerifyFull, Some(sslrootcert.to_owned()));
        match client_config(&target).await {
            Ok(_) => panic!("{} must be refused", sslrootcert.display()),
            Err(error) => {
                let mut text = error.to_string();
                if let Some(source) = std::error::Error::source(&error) {
                    text.push_str(&format!(": {source}"));
                }
                text
            }
        }
    }

    #[tokio::test]
    async fn disable_needs_no_tls_and_require_needs_no_ca_file() {
        let disabled = client_config(&target(SslMode::Disable, None)).await;
        assert!(matches!(disabled, Ok(None)));
        let required = client_config(&target(SslMode::Require, None)).await;
        assert!(matches!(required, Ok(Some(_))));
    }

    #[tokio::test]
    async fn an_unusable_ca_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing-ca.pem");
        let error = setup_error(&missing).await;
        assert!(
            error.starts_with(&format!("cannot read sslrootcert {}: ", missing.display())),
            "{error}"
        );

        let empty = dir.path().join("empty-ca.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let error = setup_error(&empty).await;
        assert!(
            error.starts_with(&format!(
                "sslrootcert {} holds no certificate",
                empty.display()
            )),
            "{error}"
        );

        let broken = dir.path().join("broken-ca.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let error = setup_error(&broken).await;
        assert!(
            error.starts_with(&format!("sslrootcert {}: certificate 1 ", broken.display())),
            "{error}"
        );
    }
}
