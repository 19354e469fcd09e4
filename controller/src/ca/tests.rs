//! The CA end to end on a temporary directory: what `init` writes, what
//! `issue` writes, that the certificates verify as rustls will verify them,
//! and what is refused.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgrollout_shared::identity::SpiffeId;
use pgrollout_shared::tls::{self, CertificateTimeError};
use rustls::client::danger::ServerCertVerifier as _;
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::files::{CA_CERTIFICATE_FILE, CA_KEY_FILE, TRUST_DOMAIN_FILE};
use super::*;

const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 86_400);
const NINETY_DAYS: Duration = Duration::from_secs(90 * 86_400);

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("file exists")
        .permissions()
        .mode()
        & 0o777
}

/// A CA initialised in a fresh temporary directory (`<tmp>/ca`, so `init`
/// creates the directory itself).
fn new_ca() -> (tempfile::TempDir, std::path::PathBuf) {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("ca");
    init(&dir, "pgrollout.test", TEN_YEARS, SystemTime::now()).expect("ca init");
    (temp, dir)
}

fn issue_now(dir: &Path, request: &LeafRequest) -> Result<IssuedCertificate, CaError> {
    let (not_before, not_after) = validity_window(SystemTime::now(), NINETY_DAYS)?;
    load(dir)?.issue(request, not_before, not_after)
}

fn leaf(issued: &IssuedCertificate) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).expect("issued PEM")
}

fn roots(dir: &Path) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for certificate in tls::load_certs(&dir.join(CA_CERTIFICATE_FILE)).expect("ca.pem") {
        roots.add(certificate).expect("CA certificate accepted");
    }
    Arc::new(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn verify_as_client(
    dir: &Path,
    certificate: &CertificateDer<'_>,
    now: SystemTime,
) -> Result<(), rustls::Error> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(dir), provider())
        .build()
        .expect("client verifier");
    let now = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).expect("after 1970"));
    verifier
        .verify_client_cert(certificate, &[], now)
        .map(|_| ())
}

fn verify_as_server(
    dir: &Path,
    certificate: &CertificateDer<'_>,
    name: &str,
) -> Result<(), rustls::Error> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(dir), provider())
        .build()
        .expect("server verifier");
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    verifier
        .verify_server_cert(certificate, &[], &name, &[], UnixTime::now())
        .map(|_| ())
}

#[test]
fn init_writes_the_ca_files_with_their_modes() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("ca");
    let ca = init(&dir, "pgrollout.test", TEN_YEARS, SystemTime::now()).expect("ca init");

    assert_eq!(ca.certificate, dir.join("ca.pem"));
    assert_eq!(ca.private_key, dir.join("ca.key"));
    assert_eq!(mode(&ca.private_key), 0o600);
    assert_eq!(mode(&ca.certificate), 0o644);
    assert_eq!(mode(&ca.trust_domain_file), 0o644);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(
        std::fs::read_to_string(&ca.trust_domain_file).expect("trust-domain"),
        "pgrollout.test\n"
    );
    let certificates = tls::load_certs(&ca.certificate).expect("ca.pem");
    let info = tls::inspect(&certificates[0]).expect("CA certificate");
    assert_eq!(info, ca.info);
    assert_eq!(
        info.subject,
        format!(
            "O=pgrollout, CN=pgrollout CA pgrollout.test {}",
            &info.serial_hex[..8]
        )
    );
    assert_eq!(info.spiffe, None);
    let validity = info
        .not_after
        .duration_since(info.not_before)
        .expect("ordered");
    assert_eq!(validity, TEN_YEARS + CLOCK_SKEW_ALLOWANCE);
    tls::load_private_key(&ca.private_key).expect("ca.key is a PEM key");
}

#[test]
fn init_refuses_to_overwrite_a_ca() {
    let (_temp, dir) = new_ca();
    let key_before = std::fs::read(dir.join(CA_KEY_FILE)).expect("ca.key");

    let error = init(&dir, "pgrollout.test", TEN_YEARS, SystemTime::now()).expect_err("refused");
    assert!(
        matches!(error, CaError::AlreadyInitialized { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with(&format!(
            "a CA already exists in {} ({}/ca.pem is present); refusing to overwrite it",
            dir.display(),
            dir.display()
        )),
        "{error}"
    );
    assert_eq!(
        std::fs::read(dir.join(CA_KEY_FILE)).expect("ca.key"),
        key_before
    );

    // Any one of the files is enough to refuse.
    std::fs::remove_file(dir.join(CA_CERTIFICATE_FILE)).expect("remove ca.pem");
    let error = init(&dir, "pgrollout.test", TEN_YEARS, SystemTime::now()).expect_err("refused");
    assert!(
        matches!(error, CaError::AlreadyInitialized { .. }),
        "{error:?}"
    );
}

#[test]
fn init_refuses_invalid_trust_domains_and_validities_before_writing() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("ca");
    for trust_domain in ["Example.org", "", "a/b", "spiffe://x"] {
        let error = init(&dir, trust_domain, TEN_YEARS, SystemTime::now()).expect_err("refused");
        assert!(
            matches!(
                error,
                CaError::InvalidSegment {
                    what: "trust domain",
                    ..
                }
            ),
            "{error:?}"
        );
    }
    let error = init(&dir, "td", Duration::ZERO, SystemTime::now()).expect_err("refused");
    assert_eq!(
        error.to_string(),
        "invalid validity: it must be longer than zero"
    );
    assert!(!dir.exists());
}

#[test]
fn issued_agent_certificate_verifies_and_carries_its_zone_bound_identity() {
    let (_temp, dir) = new_ca();
    let request = LeafRequest::agent("dev", "dev-1");
    let issued = issue_now(&dir, &request).expect("issue");
    let files = LeafFiles::default_in(&dir, &request.role);
    write_leaf(&issued, &files).expect("write");

    assert_eq!(files.certificate, dir.join("agent-dev-dev-1.pem"));
    assert_eq!(files.private_key, dir.join("agent-dev-dev-1.key"));
    assert_eq!(mode(&files.private_key), 0o600);
    assert_eq!(mode(&files.certificate), 0o644);

    let certificates = tls::load_certs(&files.certificate).expect("certificate file");
    let expected = SpiffeId::agent("pgrollout.test", "dev", "dev-1");
    assert_eq!(issued.identity, expected);
    assert_eq!(
        tls::identity_of_peer(&certificates).expect("identity"),
        expected
    );
    let info = tls::inspect(&certificates[0]).expect("inspect");
    assert_eq!(info.spiffe, Some(expected));
    assert_eq!(info.subject, "CN=agent dev/dev-1");
    assert_eq!(info, issued.info);
    tls::check_validity(&files.certificate, &info, SystemTime::now()).expect("valid now");

    // The exact URI SAN, as another SPIFFE implementation would read it.
    let (_, parsed) = x509_parser::parse_x509_certificate(&certificates[0]).expect("x509");
    let sans = parsed
        .subject_alternative_name()
        .expect("SAN extension")
        .expect("SAN present");
    let uris: Vec<String> = sans
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(uris, ["spiffe://pgrollout.test/zone/dev/agent/dev-1"]);
    assert!(!parsed.is_ca());

    verify_as_client(&dir, &certificates[0], SystemTime::now()).expect("client cert verifies");
    // A client certificate is no server certificate.
    assert!(verify_as_server(&dir, &certificates[0], "localhost").is_err());

    // The key on disk is the certificate's key.
    let key = tls::load_private_key(&files.private_key).expect("key file");
    rustls::crypto::ring::sign::any_supported_type(&key).expect("usable key");
}

#[test]
fn controller_certificate_serves_its_names_and_can_be_a_client() {
    let (_temp, dir) = new_ca();
    let request = LeafRequest::controller(
        "main",
        vec![
            "controller.pgrollout.test".to_owned(),
            "localhost".to_owned(),
        ],
        vec!["127.0.0.1".parse().expect("ip")],
    );
    let issued = issue_now(&dir, &request).expect("issue");
    let certificate = leaf(&issued);

    assert_eq!(
        issued.identity,
        SpiffeId::controller("pgrollout.test", "main")
    );
    assert_eq!(
        issued.info.dns_names,
        ["controller.pgrollout.test", "localhost"]
    );
    verify_as_server(&dir, &certificate, "localhost").expect("localhost");
    verify_as_server(&dir, &certificate, "127.0.0.1").expect("127.0.0.1");
    verify_as_server(&dir, &certificate, "controller.pgrollout.test").expect("dns name");
    assert!(verify_as_server(&dir, &certificate, "elsewhere.test").is_err());
    verify_as_client(&dir, &certificate, SystemTime::now()).expect("client auth too");
    assert_eq!(
        LeafFiles::default_in(&dir, &request.role).certificate,
        dir.join("controller-main.pem")
    );
}

#[test]
fn operator_certificate_and_output_prefix() {
    let (temp, dir) = new_ca();
    let request = LeafRequest::operator("alice");
    let issued = issue_now(&dir, &request).expect("issue");
    assert_eq!(
        issued.identity.to_string(),
        "spiffe://pgrollout.test/operator/alice"
    );
    verify_as_client(&dir, &leaf(&issued), SystemTime::now()).expect("verifies");

    let files = LeafFiles::with_prefix(&temp.path().join("alice.ops"));
    write_leaf(&issued, &files).expect("write");
    assert_eq!(files.certificate, temp.path().join("alice.ops.pem"));
    assert_eq!(files.private_key, temp.path().join("alice.ops.key"));
    assert_eq!(mode(&files.private_key), 0o600);
    assert_eq!(
        LeafFiles::default_in(&dir, &request.role).private_key,
        dir.join("operator-alice.key")
    );
}

#[test]
fn renewal_replaces_the_files_and_keeps_the_key_private() {
    let (_temp, dir) = new_ca();
    let request = LeafRequest::agent("prod", "prod-1");
    let files = LeafFiles::default_in(&dir, &request.role);
    let first = issue_now(&dir, &request).expect("issue");
    write_leaf(&first, &files).expect("write");
    let second = issue_now(&dir, &request).expect("renew");
    write_leaf(&second, &files).expect("rewrite");

    assert_ne!(first.info.serial_hex, second.info.serial_hex);
    let on_disk =
        tls::inspect(&tls::load_certs(&files.certificate).expect("pem")[0]).expect("x509");
    assert_eq!(on_disk.serial_hex, second.info.serial_hex);
    assert_eq!(mode(&files.private_key), 0o600);
    // No temporary files are left next to them.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn serials_are_random_32_hex_digits() {
    let (_temp, dir) = new_ca();
    let a = issue_now(&dir, &LeafRequest::operator("a")).expect("issue");
    let b = issue_now(&dir, &LeafRequest::operator("a")).expect("issue");
    for serial in [&a.info.serial_hex, &b.info.serial_hex] {
        assert_eq!(serial.len(), 32, "{serial}");
        assert!(serial
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    }
    assert_ne!(a.info.serial_hex, b.info.serial_hex);
}

#[test]
fn invalid_requests_are_refused_with_the_reason() {
    let (_temp, dir) = new_ca();
    let cases = [
        (LeafRequest::agent("Prod", "a"), "invalid zone \"Prod\": use 1-63 characters of a-z, 0-9, '-', '_', '.'"),
        (LeafRequest::agent("dev", "a/b"), "invalid name \"a/b\": use 1-63 characters of a-z, 0-9, '-', '_', '.'"),
        (LeafRequest::operator(""), "invalid name \"\": use 1-63 characters of a-z, 0-9, '-', '_', '.'"),
        (
            LeafRequest::controller("main", Vec::new(), Vec::new()),
            "a controller certificate needs at least one --dns name or --ip address that agents and operators connect to",
        ),
        (
            LeafRequest::controller("main", vec!["not a host".to_owned()], Vec::new()),
            "invalid DNS name \"not a host\"",
        ),
        (
            LeafRequest {
                dns_names: vec!["localhost".to_owned()],
                ..LeafRequest::agent("dev", "a")
            },
            "only controller certificates carry DNS names or IP addresses",
        ),
    ];
    for (request, message) in cases {
        let error = issue_now(&dir, &request).expect_err("refused");
        assert_eq!(error.to_string(), message);
    }
}

#[test]
fn an_expired_certificate_says_which_and_when() {
    let (_temp, dir) = new_ca();
    let day = |days: u64| UNIX_EPOCH + Duration::from_secs(days * 86_400);
    // 2021-01-01 .. 2021-04-01, long expired.
    let issued = load(&dir)
        .expect("load")
        .issue(
            &LeafRequest::agent("dev", "dev-1"),
            day(18_628),
            day(18_718),
        )
        .expect("issue in the past");
    let certificate = leaf(&issued);
    let path = Path::new("/etc/pgrollout/agent.pem");
    let now = day(18_725) + Duration::from_secs(3600);

    let error = tls::check_validity(path, &issued.info, now).expect_err("expired");
    assert!(matches!(error, CertificateTimeError::Expired { .. }));
    assert_eq!(
        error.to_string(),
        "certificate /etc/pgrollout/agent.pem (spiffe://pgrollout.test/zone/dev/agent/dev-1) \
         expired at 2021-04-01 00:00:00 UTC (7 days ago); renew it with \
         `pgrollout ca issue agent --dir <ca-dir> --zone dev --name dev-1`"
    );
    let rejected = verify_as_client(&dir, &certificate, SystemTime::now()).expect_err("expired");
    assert!(
        matches!(
            rejected,
            rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext { .. })
                | rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)
        ),
        "{rejected:?}"
    );
}

#[test]
fn a_leaf_cannot_outlive_its_ca() {
    let temp = tempfile::tempdir().expect("temp dir");
    init(temp.path(), "td", NINETY_DAYS, SystemTime::now()).expect("short CA");
    let (not_before, not_after) = validity_window(SystemTime::now(), TEN_YEARS).expect("window");
    let error = load(temp.path())
        .expect("load")
        .issue(&LeafRequest::operator("alice"), not_before, not_after)
        .expect_err("refused");
    assert!(matches!(error, CaError::OutlivesCa { .. }), "{error:?}");
    assert!(
        error.to_string().contains("choose a shorter --validity"),
        "{error}"
    );
}

#[test]
fn loading_refuses_a_missing_ca_and_a_foreign_key() {
    let temp = tempfile::tempdir().expect("temp dir");
    let error = load(temp.path()).expect_err("no CA");
    assert_eq!(
        error.to_string(),
        format!(
            "no CA in {dir} ({dir}/ca.pem not found); create one with `pgrollout ca init --dir {dir}`",
            dir = temp.path().display()
        )
    );

    let (_a, first) = new_ca();
    let (_b, second) = new_ca();
    std::fs::copy(second.join(CA_KEY_FILE), first.join(CA_KEY_FILE)).expect("swap key");
    let error = load(&first).expect_err("foreign key");
    assert!(
        matches!(error, CaError::KeyDoesNotMatch { .. }),
        "{error:?}"
    );

    std::fs::write(first.join(TRUST_DOMAIN_FILE), "Not A Domain\n").expect("write");
    assert!(matches!(
        load(&first),
        Err(CaError::UnusableTrustDomain { .. })
    ));
}

#[test]
fn a_leaf_certificate_is_refused_as_a_ca() {
    let (_temp, dir) = new_ca();
    let request = LeafRequest::operator("alice");
    let files = LeafFiles::with_prefix(&dir.join("leaf"));
    write_leaf(&issue_now(&dir, &request).expect("issue"), &files).expect("write");
    std::fs::copy(&files.certificate, dir.join(CA_CERTIFICATE_FILE)).expect("copy");
    std::fs::copy(&files.private_key, dir.join(CA_KEY_FILE)).expect("copy");
    let error = load(&dir).expect_err("not a CA");
    assert!(
        matches!(error, CaError::UnusableCaCertificate { .. }),
        "{error:?}"
    );
}

#[test]
fn the_private_key_never_prints() {
    let (_temp, dir) = new_ca();
    let issued = issue_now(&dir, &LeafRequest::operator("alice")).expect("issue");
    assert!(issued.private_key_pem.expose().contains("PRIVATE KEY"));
    let debug = format!("{issued:?} {:?}", load(&dir).expect("load"));
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    assert!(!debug.contains(
        issued
            .private_key_pem
            .expose()
            .lines()
            .nth(1)
            .expect("base64")
    ));
}
