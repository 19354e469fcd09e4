//! A real mutual-TLS handshake with certificates from the built-in CA, over
//! an in-memory duplex pipe: the server learns the agent's identity from the
//! verified certificate, and clients without one from this CA are refused.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pgrollout_shared::identity::SpiffeId;
use pgrollout_shared::tls;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::files::CA_CERTIFICATE_FILE;
use super::*;

const ONE_YEAR: Duration = Duration::from_secs(365 * 86_400);

struct Pki {
    _temp: tempfile::TempDir,
    dir: std::path::PathBuf,
}

impl Pki {
    fn new(trust_domain: &str) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("ca");
        init(&dir, trust_domain, ONE_YEAR * 2, SystemTime::now()).expect("ca init");
        Pki { _temp: temp, dir }
    }

    fn issue(
        &self,
        request: &LeafRequest,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let (not_before, not_after) = validity_window(SystemTime::now(), ONE_YEAR).expect("window");
        self.issue_between(request, not_before, not_after)
    }

    fn issue_between(
        &self,
        request: &LeafRequest,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let issued = load(&self.dir)
            .expect("load")
            .issue(request, not_before, not_after)
            .expect("issue");
        let certificate =
            CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).expect("cert PEM");
        let key = PrivateKeyDer::from_pem_slice(issued.private_key_pem.expose().as_bytes())
            .expect("key PEM");
        (vec![certificate], key)
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for certificate in tls::load_certs(&self.dir.join(CA_CERTIFICATE_FILE)).expect("ca.pem") {
            roots.add(certificate).expect("trust anchor");
        }
        Arc::new(roots)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The controller's side: its certificate, client certificates required and
/// verified against `pki`'s CA.
fn server_config(pki: &Pki) -> Arc<ServerConfig> {
    let (certificates, key) = pki.issue(&LeafRequest::controller(
        "main",
        vec!["localhost".to_owned()],
        Vec::new(),
    ));
    let verifier = WebPkiClientVerifier::builder_with_provider(pki.roots(), provider())
        .build()
        .expect("client verifier");
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates, key)
        .expect("server certificate");
    Arc::new(config)
}

/// A client that trusts `trusted`'s CA and presents `identity` (if any).
fn client_config(
    trusted: &Pki,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(trusted.roots());
    let config = match identity {
        Some((certificates, key)) => builder
            .with_client_auth_cert(certificates, key)
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// Runs one handshake plus a one-byte exchange; returns what the server
/// learnt about its peer, or why the server refused it.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> Result<SpiffeId, String> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server_side = async move {
        let mut stream = TlsAcceptor::from(server)
            .accept(server_io)
            .await
            .map_err(|error| error.to_string())?;
        let certificates = stream
            .get_ref()
            .1
            .peer_certificates()
            .ok_or("no peer certificates")?
            .to_vec();
        let identity = tls::identity_of_peer(&certificates).map_err(|error| error.to_string())?;
        stream
            .write_all(b"k")
            .await
            .map_err(|error| error.to_string())?;
        stream.shutdown().await.map_err(|error| error.to_string())?;
        Ok::<_, String>(identity)
    };
    let client_side = async move {
        let name = ServerName::try_from("localhost").expect("server name");
        let mut stream = TlsConnector::from(client).connect(name, client_io).await?;
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await?;
        Ok::<_, std::io::Error>(())
    };
    let (server_result, _client_result) = tokio::join!(server_side, client_side);
    server_result
}

#[tokio::test]
async fn the_server_learns_the_agents_identity_from_its_certificate() {
    let pki = Pki::new("pgrollout.test");
    let agent = pki.issue(&LeafRequest::agent("dev", "dev-1"));
    let identity = handshake(server_config(&pki), client_config(&pki, Some(agent)))
        .await
        .expect("handshake");
    assert_eq!(identity, SpiffeId::agent("pgrollout.test", "dev", "dev-1"));

    let operator = pki.issue(&LeafRequest::operator("alice"));
    let identity = handshake(server_config(&pki), client_config(&pki, Some(operator)))
        .await
        .expect("handshake");
    assert_eq!(identity, SpiffeId::operator("pgrollout.test", "alice"));
}

#[tokio::test]
async fn a_client_from_another_ca_is_refused() {
    let pki = Pki::new("pgrollout.test");
    let other = Pki::new("pgrollout.test");
    // Same trust domain, same names: only the CA differs.
    let impostor = other.issue(&LeafRequest::agent("prod", "prod-1"));
    let error = handshake(server_config(&pki), client_config(&pki, Some(impostor)))
        .await
        .expect_err("refused");
    assert!(error.contains("UnknownIssuer"), "{error}");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let pki = Pki::new("pgrollout.test");
    let error = handshake(server_config(&pki), client_config(&pki, None))
        .await
        .expect_err("refused");
    assert!(error.contains("peer sent no certificates"), "{error}");
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let pki = Pki::new("pgrollout.test");
    let now = SystemTime::now();
    let expired = pki.issue_between(
        &LeafRequest::agent("dev", "dev-1"),
        now - Duration::from_secs(3600),
        now - Duration::from_secs(60),
    );
    let error = handshake(server_config(&pki), client_config(&pki, Some(expired)))
        .await
        .expect_err("refused");
    assert!(error.contains("certificate expired"), "{error}");
}
