//! Certificate files as both binaries use them: PEM loading, what a
//! certificate says (SPIFFE id, serial, validity window), an error that names
//! the certificate and the time when it is expired or not yet valid, and the
//! identity of a verified TLS peer.
//!
//! Nothing here ever formats key material: errors about key files name the
//! file and the kind of problem, never the content.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::GeneralName;
use x509_parser::time::ASN1Time;

use crate::identity::{InvalidIdentity, Role, SpiffeId};

/// Why a certificate or key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// The file could not be read at all (missing, permissions, …).
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is readable but holds no `CERTIFICATE` block.
    #[error("no certificate in {} (expected a PEM block \"-----BEGIN CERTIFICATE-----\")", path.display())]
    NoCertificate { path: PathBuf },
    /// The file is readable but holds no private key block.
    #[error(
        "no private key in {} (expected a PEM block \"-----BEGIN PRIVATE KEY-----\", \
         \"-----BEGIN EC PRIVATE KEY-----\" or \"-----BEGIN RSA PRIVATE KEY-----\")",
        path.display()
    )]
    NoPrivateKey { path: PathBuf },
    /// The PEM structure itself is broken. Only the kind of damage is
    /// reported: the parser's own message may quote the file's content.
    #[error("{} is not valid PEM: {problem}", path.display())]
    MalformedPem {
        path: PathBuf,
        problem: &'static str,
    },
}

/// Why DER bytes are not a certificate pgrollout can read.
#[derive(Debug, thiserror::Error)]
pub enum InvalidCertificate {
    /// The bytes are not an X.509 certificate.
    #[error("not a valid X.509 certificate")]
    Der(#[source] x509_parser::nom::Err<X509Error>),
    /// The subject alternative name extension is present but unreadable.
    #[error("the certificate's subject alternative names are malformed")]
    SubjectAlternativeName(#[source] X509Error),
}

/// Why a verified peer has no pgrollout identity.
#[derive(Debug, thiserror::Error)]
pub enum PeerIdentityError {
    /// The peer sent no certificate (the TLS layer was configured without
    /// client authentication, or the chain is empty).
    #[error("the peer presented no certificate")]
    NoCertificate,
    /// The leaf certificate cannot be parsed.
    #[error("the peer's certificate cannot be read")]
    Unreadable(#[source] InvalidCertificate),
    /// The leaf certificate parses but carries no `spiffe://` URI that is a
    /// pgrollout identity; `rejected` is why the first URI SAN was refused.
    #[error(
        "the peer's certificate ({subject}) carries no pgrollout identity: expected a URI \
         subject alternative name spiffe://<trust-domain>/zone/<zone>/agent/<name>, \
         /operator/<name> or /controller/<name>; issue one with `pgrollout ca issue`"
    )]
    NoIdentity {
        subject: String,
        #[source]
        rejected: Option<InvalidIdentity>,
    },
}

/// A certificate outside its validity window. The message names the file,
/// whose certificate it is, the moment it stopped (or starts) being valid and
/// what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CertificateTimeError {
    /// `now` is after the certificate's `notAfter`.
    #[error(
        "certificate {} ({holder}) expired at {} ({} ago); {remedy}",
        .path.display(),
        format_utc(*.not_after),
        approximately(*.since)
    )]
    Expired {
        path: PathBuf,
        /// The certificate's SPIFFE id, or its subject if it has none.
        holder: String,
        not_after: SystemTime,
        since: Duration,
        /// The `pgrollout ca issue …` command that renews it, when known.
        remedy: String,
    },
    /// `now` is before the certificate's `notBefore`.
    #[error(
        "certificate {} ({holder}) is not valid until {} (in {}); check the clocks of this \
         machine and of the machine that issued it",
        .path.display(),
        format_utc(*.not_before),
        approximately(*.until)
    )]
    NotYetValid {
        path: PathBuf,
        /// The certificate's SPIFFE id, or its subject if it has none.
        holder: String,
        not_before: SystemTime,
        until: Duration,
    },
}

/// What a certificate says about itself, as pgrollout needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The first URI subject alternative name that is a pgrollout identity.
    pub spiffe: Option<SpiffeId>,
    /// The serial number in lowercase hex, without leading zeros or colons
    /// (`openssl x509 -serial` prints the same digits in upper case, padded
    /// to whole bytes; the built-in CA's serials never need padding).
    pub serial_hex: String,
    /// Start of the validity window (inclusive).
    pub not_before: SystemTime,
    /// End of the validity window (inclusive).
    pub not_after: SystemTime,
    /// The subject distinguished name, e.g. `CN=agent dev/dev-1`.
    pub subject: String,
    /// The DNS subject alternative names.
    pub dns_names: Vec<String>,
}

/// Reads every certificate of a PEM file, in file order (leaf first for a
/// chain). A file without any certificate is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| malformed(path, &error))?;
    if certs.is_empty() {
        return Err(TlsFileError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, SEC1 or PKCS#1) of a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsFileError::NoPrivateKey {
            path: path.to_owned(),
        },
        other => malformed(path, &other),
    })
}

/// Parses a DER certificate into what pgrollout needs to know about it.
pub fn inspect(cert: &CertificateDer<'_>) -> Result<CertificateInfo, InvalidCertificate> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(InvalidCertificate::Der)?;
    let (uris, dns_names) = subject_alternative_names(&parsed)?;
    let spiffe = uris.iter().find_map(|uri| SpiffeId::parse(uri).ok());
    Ok(CertificateInfo {
        spiffe,
        serial_hex: parsed.serial.to_str_radix(16),
        not_before: system_time(parsed.validity().not_before),
        not_after: system_time(parsed.validity().not_after),
        subject: parsed.subject().to_string(),
        dns_names,
    })
}

/// Checks that `now` lies inside the certificate's validity window; `path`
/// is only used to name the certificate in the error.
pub fn check_validity(
    path: &Path,
    info: &CertificateInfo,
    now: SystemTime,
) -> Result<(), CertificateTimeError> {
    if let Ok(since) = now.duration_since(info.not_after) {
        if since > Duration::ZERO {
            return Err(CertificateTimeError::Expired {
                path: path.to_owned(),
                holder: holder(info),
                not_after: info.not_after,
                since,
                remedy: remedy(info.spiffe.as_ref()),
            });
        }
    }
    if let Ok(until) = info.not_before.duration_since(now) {
        if until > Duration::ZERO {
            return Err(CertificateTimeError::NotYetValid {
                path: path.to_owned(),
                holder: holder(info),
                not_before: info.not_before,
                until,
            });
        }
    }
    Ok(())
}

/// The SPIFFE id of a TLS peer: the first URI SAN of the leaf (first)
/// certificate that is a pgrollout identity. Call it on a chain rustls has
/// already verified; this function checks nothing about trust.
pub fn identity_of_peer(certs: &[CertificateDer<'_>]) -> Result<SpiffeId, PeerIdentityError> {
    let leaf = certs.first().ok_or(PeerIdentityError::NoCertificate)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|error| PeerIdentityError::Unreadable(InvalidCertificate::Der(error)))?;
    let (uris, _) = subject_alternative_names(&parsed).map_err(PeerIdentityError::Unreadable)?;
    let mut rejected = None;
    for uri in &uris {
        match SpiffeId::parse(uri) {
            Ok(id) => return Ok(id),
            Err(error) => {
                rejected.get_or_insert(error);
            }
        }
    }
    Err(PeerIdentityError::NoIdentity {
        subject: parsed.subject().to_string(),
        rejected,
    })
}

/// Formats a moment as operators read it everywhere in pgrollout:
/// `2026-11-20 10:00:00 UTC` (whole seconds, as certificates store them).
pub fn format_utc(time: SystemTime) -> String {
    let seconds = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs() as i64,
        // Round towards the past, so 0.5 s before the epoch is 23:59:59.
        Err(before) => -(before.duration().as_secs_f64().ceil() as i64),
    };
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(utc) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            utc.year(),
            u8::from(utc.month()),
            utc.day(),
            utc.hour(),
            utc.minute(),
            utc.second()
        ),
        // Beyond the years ±9999 (no certificate or window reaches them).
        Err(_) => format!("{seconds} s from 1970-01-01 00:00:00 UTC"),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Maps a PEM parser error to a fixed description: the parser's message can
/// quote lines of the file, and for a key file those are secret.
fn malformed(path: &Path, error: &pem::Error) -> TlsFileError {
    let problem = match error {
        pem::Error::MissingSectionEnd { .. } => "a block has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a block's base64 content is invalid",
        pem::Error::SectionTooLarge => "a block is too large",
        pem::Error::NoItemsFound => "it contains no PEM block",
        pem::Error::Io(_) => "it could not be read",
        _ => "it cannot be parsed",
    };
    TlsFileError::MalformedPem {
        path: path.to_owned(),
        problem,
    }
}

/// The URI and DNS subject alternative names, in certificate order.
fn subject_alternative_names(
    cert: &X509Certificate<'_>,
) -> Result<(Vec<String>, Vec<String>), InvalidCertificate> {
    let mut uris = Vec::new();
    let mut dns_names = Vec::new();
    let extension = cert
        .subject_alternative_name()
        .map_err(InvalidCertificate::SubjectAlternativeName)?;
    for name in extension.iter().flat_map(|ext| &ext.value.general_names) {
        match name {
            GeneralName::URI(uri) => uris.push((*uri).to_owned()),
            GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
            _ => {}
        }
    }
    Ok((uris, dns_names))
}

fn system_time(time: ASN1Time) -> SystemTime {
    time.to_datetime().into()
}

/// `7 days`, `5 hours`, `1 minute`: the largest unit with at least two of
/// them (so 36 hours stay hours), rounded down. Hand-written because
/// humantime prints every unit (`7days 3h 2m 5s`), not one rounded unit.
fn approximately(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (count, unit) = if seconds >= 2 * 86_400 {
        (seconds / 86_400, "day")
    } else if seconds >= 2 * 3600 {
        (seconds / 3600, "hour")
    } else if seconds >= 2 * 60 {
        (seconds / 60, "minute")
    } else {
        (seconds, "second")
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {unit}{plural}")
}

/// The SPIFFE id when there is one, else the subject name.
fn holder(info: &CertificateInfo) -> String {
    match &info.spiffe {
        Some(id) => id.to_string(),
        None if info.subject.is_empty() => "no subject".to_owned(),
        None => info.subject.clone(),
    }
}

/// The command that issues a replacement, for the identities the built-in CA
/// issues.
fn remedy(spiffe: Option<&SpiffeId>) -> String {
    let command = match spiffe.map(|id| &id.role) {
        Some(Role::Agent { zone, name }) => {
            format!("pgrollout ca issue agent --dir <ca-dir> --zone {zone} --name {name}")
        }
        Some(Role::Operator { name }) => {
            format!("pgrollout ca issue operator --dir <ca-dir> --name {name}")
        }
        Some(Role::Controller { name }) => {
            format!("pgrollout ca issue controller --dir <ca-dir> --name {name} --dns <name>...")
        }
        None => return "replace it with a renewed certificate".to_owned(),
    };
    format!("renew it with `{command}`")
}

#[cfg(test)]
mod tests {
    //! Against the PEM fixtures in `tls_fixtures/` (see its README).

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/tls_fixtures")
            .join(name)
    }

    fn info_of(name: &str) -> CertificateInfo {
        let certs = load_certs(&fixture(name)).expect("fixture loads");
        inspect(&certs[0]).expect("fixture parses")
    }

    fn utc(days_since_epoch: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(days_since_epoch * 86_400)
    }

    /// A scratch file outside the source tree, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn with(name: &str, contents: &str) -> Self {
            let path = std::env::temp_dir()
                .join(format!("pgrollout-tls-test-{}-{name}", std::process::id()));
            std::fs::write(&path, contents).expect("scratch file");
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn inspects_an_agent_certificate() {
        let info = info_of("agent-dev-dev-1.pem");
        assert_eq!(
            info,
            CertificateInfo {
                spiffe: Some(SpiffeId::agent("fixtures.test", "dev", "dev-1")),
                serial_hex: "5fed08e2a4b9f748888c49d2b73ffad4".to_owned(),
                not_before: utc(20_089),
                not_after: utc(56_248),
                subject: "CN=agent dev/dev-1".to_owned(),
                dns_names: Vec::new(),
            }
        );
        assert_eq!(format_utc(info.not_after), "2124-01-02 00:00:00 UTC");
    }

    #[test]
    fn inspects_a_controller_and_a_ca_certificate() {
        let controller = info_of("controller-main.pem");
        assert_eq!(
            controller.spiffe,
            Some(SpiffeId::controller("fixtures.test", "main"))
        );
        assert_eq!(
            controller.dns_names,
            ["localhost", "controller.fixtures.test"]
        );

        let ca = info_of("ca.pem");
        assert_eq!(ca.spiffe, None);
        assert_eq!(
            ca.subject,
            "O=pgrollout, CN=pgrollout CA fixtures.test 411639ad"
        );
        assert_eq!(ca.serial_hex, "411639ad2f684d7aafc1cd1628371143");
    }

    #[test]
    fn refuses_bytes_that_are_no_certificate() {
        let not_der = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        assert!(matches!(inspect(&not_der), Err(InvalidCertificate::Der(_))));
    }

    #[test]
    fn a_certificate_inside_its_window_is_valid() {
        let path = fixture("agent-dev-dev-1.pem");
        let info = info_of("agent-dev-dev-1.pem");
        check_validity(&path, &info, SystemTime::now()).expect("valid now");
        check_validity(&path, &info, info.not_before).expect("first second is valid");
        check_validity(&path, &info, info.not_after).expect("last second is valid");
    }

    #[test]
    fn an_expired_certificate_names_itself_when_and_how_to_renew() {
        let info = info_of("agent-expired.pem");
        let error = check_validity(
            Path::new("/etc/pgrollout/agent.pem"),
            &info,
            utc(18_725) + Duration::from_secs(7200),
        )
        .expect_err("expired");
        assert_eq!(
            error.to_string(),
            "certificate /etc/pgrollout/agent.pem (spiffe://fixtures.test/zone/dev/agent/dev-1) \
             expired at 2021-04-01 00:00:00 UTC (7 days ago); renew it with \
             `pgrollout ca issue agent --dir <ca-dir> --zone dev --name dev-1`"
        );
        assert!(check_validity(Path::new("x"), &info, SystemTime::now()).is_err());
    }

    #[test]
    fn a_certificate_not_yet_valid_says_until_when() {
        let info = info_of("operator-future.pem");
        let error = check_validity(
            Path::new("alice.pem"),
            &info,
            utc(47_482) - Duration::from_secs(3 * 3600 + 5),
        )
        .expect_err("not yet valid");
        assert_eq!(
            error.to_string(),
            "certificate alice.pem (spiffe://fixtures.test/operator/alice) is not valid until \
             2100-01-01 00:00:00 UTC (in 3 hours); check the clocks of this machine and of the \
             machine that issued it"
        );
    }

    #[test]
    fn a_certificate_without_identity_is_named_by_its_subject() {
        let mut info = info_of("ca.pem");
        info.not_after = utc(1);
        let error = check_validity(Path::new("ca.pem"), &info, utc(2)).expect_err("expired");
        assert_eq!(
            error.to_string(),
            "certificate ca.pem (O=pgrollout, CN=pgrollout CA fixtures.test 411639ad) expired at \
             1970-01-02 00:00:00 UTC (24 hours ago); replace it with a renewed certificate"
        );
    }

    #[test]
    fn identity_of_peer_reads_the_leaf() {
        let mut chain = load_certs(&fixture("agent-dev-dev-1.pem")).expect("leaf");
        chain.extend(load_certs(&fixture("ca.pem")).expect("ca"));
        assert_eq!(
            identity_of_peer(&chain).expect("identity"),
            SpiffeId::agent("fixtures.test", "dev", "dev-1")
        );

        assert!(matches!(
            identity_of_peer(&[]),
            Err(PeerIdentityError::NoCertificate)
        ));
        let ca = load_certs(&fixture("ca.pem")).expect("ca");
        let error = identity_of_peer(&ca).expect_err("no identity");
        assert!(
            error.to_string().starts_with(
                "the peer's certificate (O=pgrollout, CN=pgrollout CA fixtures.test 411639ad) carries no \
                 pgrollout identity"
            ),
            "{error}"
        );
    }

    #[test]
    fn file_errors_name_the_file_and_the_problem() {
        let missing = fixture("missing.pem");
        let error = load_certs(&missing).expect_err("missing");
        assert_eq!(
            error.to_string(),
            format!("cannot read {}", missing.display())
        );
        assert!(std::error::Error::source(&error).is_some());

        let key = fixture("agent-dev-dev-1.key");
        let error = load_certs(&key).expect_err("a key is no certificate");
        assert_eq!(
            error.to_string(),
            format!(
                "no certificate in {} (expected a PEM block \"-----BEGIN CERTIFICATE-----\")",
                key.display()
            )
        );

        let certificate = fixture("agent-dev-dev-1.pem");
        let error = load_private_key(&certificate).expect_err("a certificate is no key");
        assert!(
            error
                .to_string()
                .starts_with(&format!("no private key in {}", certificate.display())),
            "{error}"
        );
        load_private_key(&key).expect("the key loads");
    }

    #[test]
    fn a_damaged_key_file_is_reported_without_its_content() {
        let secret = "c2VjcmV0LWtleS1tYXRlcmlhbA!!";
        let scratch = Scratch::with(
            "damaged.key",
            &format!("-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n"),
        );
        let error = load_private_key(&scratch.0).expect_err("damaged");
        let message = format!("{error} {error:?}");
        assert_eq!(
            error.to_string(),
            format!(
                "{} is not valid PEM: a block's base64 content is invalid",
                scratch.0.display()
            )
        );
        assert!(!message.contains("c2VjcmV0"), "{message}");

        let unterminated = Scratch::with(
            "unterminated.key",
            &format!("-----BEGIN PRIVATE KEY-----\n{secret}\n"),
        );
        let error = load_private_key(&unterminated.0).expect_err("damaged");
        assert!(
            error.to_string().ends_with("a block has no END line"),
            "{error}"
        );
    }

    #[test]
    fn formats_moments_in_utc() {
        assert_eq!(format_utc(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            format_utc(UNIX_EPOCH + Duration::from_secs(1_709_210_096)),
            "2024-02-29 12:34:56 UTC"
        );
        assert_eq!(
            format_utc(UNIX_EPOCH - Duration::from_millis(500)),
            "1969-12-31 23:59:59 UTC"
        );
        assert_eq!(
            format_utc(UNIX_EPOCH + Duration::from_secs(253_402_300_799)),
            "9999-12-31 23:59:59 UTC"
        );
    }

    #[test]
    fn durations_read_in_their_largest_sensible_unit() {
        let seconds = Duration::from_secs;
        assert_eq!(approximately(seconds(1)), "1 second");
        assert_eq!(approximately(seconds(90)), "90 seconds");
        assert_eq!(approximately(seconds(3 * 60)), "3 minutes");
        assert_eq!(approximately(seconds(36 * 3600)), "36 hours");
        assert_eq!(approximately(seconds(7 * 86_400 + 7200)), "7 days");
    }
}
