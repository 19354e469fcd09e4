//! The built-in certificate authority, so a team can start with mutual TLS
//! without a PKI (`pgrollout ca init`, `pgrollout ca issue`).
//!
//! A CA directory holds `ca.pem` (the self-signed CA certificate, 0644),
//! `ca.key` (its ECDSA P-256 key, 0600) and `trust-domain` (the SPIFFE trust
//! domain every identity it issues lives in). Leaf certificates carry their
//! pgrollout identity as a URI subject alternative name
//! (`spiffe://<trust-domain>/zone/<zone>/agent/<name>`, `…/operator/<name>`,
//! `…/controller/<name>`), which is what the controller trusts — never what a
//! peer claims on the wire.
//!
//! - `authority.rs` — certificates with rcgen: the CA, leaves signed by it, and
//!   the CA rebuilt from its files.
//! - `files.rs` — the directory layout and writing files with the right modes.
//!
//! The operator commands are in `cli/ca.rs`.

mod authority;
mod files;

#[cfg(test)]
mod mtls_tests;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use pgrollout_shared::identity::{Role, SpiffeId};
use pgrollout_shared::tls::{self, CertificateInfo};

pub use authority::CertificateAuthority;
pub use files::{init, load, validity_window, write_leaf, InitializedCa, LeafFiles};

/// How long before "now" certificates start being valid, so a machine whose
/// clock is a little behind the CA's accepts a certificate issued a moment ago.
pub const CLOCK_SKEW_ALLOWANCE: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// What to put in a leaf certificate. The trust domain comes from the CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafRequest {
    /// Whose certificate it is: agent (zone and name), operator or controller.
    pub role: Role,
    /// DNS names agents and operators dial the controller by (controller only).
    pub dns_names: Vec<String>,
    /// IP addresses agents and operators dial the controller at (controller only).
    pub ip_addresses: Vec<IpAddr>,
}

impl LeafRequest {
    /// An agent's client certificate, bound to `zone`.
    pub fn agent(zone: &str, name: &str) -> Self {
        Self::without_addresses(Role::Agent {
            zone: zone.to_owned(),
            name: name.to_owned(),
        })
    }

    /// An operator's client certificate; roles come from the controller's config.
    pub fn operator(name: &str) -> Self {
        Self::without_addresses(Role::Operator {
            name: name.to_owned(),
        })
    }

    /// The controller's certificate: server and client authentication, valid
    /// for the given DNS names and IP addresses.
    pub fn controller(name: &str, dns_names: Vec<String>, ip_addresses: Vec<IpAddr>) -> Self {
        LeafRequest {
            role: Role::Controller {
                name: name.to_owned(),
            },
            dns_names,
            ip_addresses,
        }
    }

    fn without_addresses(role: Role) -> Self {
        LeafRequest {
            role,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
        }
    }
}

/// A freshly issued certificate and its private key, both PEM.
#[derive(Debug)]
pub struct IssuedCertificate {
    /// The SPIFFE id in the certificate's URI subject alternative name.
    pub identity: SpiffeId,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The private key, PEM; its `Debug` prints nothing of it.
    pub private_key_pem: SecretPem,
    /// Serial and validity window as written into the certificate.
    pub info: CertificateInfo,
}

/// A PEM private key that never prints itself.
pub struct SecretPem(String);

impl SecretPem {
    /// Wraps PEM text of a private key.
    #[cfg(test)]
    pub fn new(pem: String) -> Self {
        SecretPem(pem)
    }

    /// The PEM text, for writing it to a 0600 file or handing it to rustls.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretPem([redacted])")
    }
}

/// Why a CA command was refused or failed. Messages say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// `ca init` on a directory that already holds (part of) a CA.
    #[error(
        "a CA already exists in {} ({} is present); refusing to overwrite it: issue \
         certificates from it with `pgrollout ca issue`, or choose another --dir",
        dir.display(), existing.display()
    )]
    AlreadyInitialized { dir: PathBuf, existing: PathBuf },
    /// `ca issue` on a directory without a CA.
    #[error(
        "no CA in {} ({} not found); create one with `pgrollout ca init --dir {}`",
        dir.display(), missing.display(), dir.display()
    )]
    NoCa { dir: PathBuf, missing: PathBuf },
    /// A trust domain, zone or name that cannot go into a SPIFFE id.
    #[error("invalid {what} {value:?}: use 1-63 characters of a-z, 0-9, '-', '_', '.'")]
    InvalidSegment { what: &'static str, value: String },
    /// A DNS name rustls would never match.
    #[error("invalid DNS name {0:?}")]
    InvalidDnsName(String),
    /// A controller certificate nobody could connect to.
    #[error(
        "a controller certificate needs at least one --dns name or --ip address that agents \
         and operators connect to"
    )]
    ControllerWithoutAddress,
    /// DNS names or IP addresses requested for a client-only certificate.
    #[error("only controller certificates carry DNS names or IP addresses")]
    AddressesOnClientCertificate,
    /// A validity window that is empty or outside what X.509 can express.
    #[error("invalid validity: {0}")]
    InvalidValidity(&'static str),
    /// A leaf that would outlive the CA that signs it.
    #[error(
        "the CA certificate is valid only until {}, but this certificate would be valid until \
         {}; choose a shorter --validity, or create a new CA with `pgrollout ca init` if this one \
         is about to expire",
        tls::format_utc(*.ca_not_after), tls::format_utc(*.not_after)
    )]
    OutlivesCa {
        ca_not_after: SystemTime,
        not_after: SystemTime,
    },
    /// `ca.pem` or a trust-domain file that cannot be used.
    #[error("{} cannot be used as this CA's certificate: {reason}", path.display())]
    UnusableCaCertificate { path: PathBuf, reason: String },
    /// `ca.key` cannot be parsed (the cause never includes key material).
    #[error("{} is not a private key pgrollout can sign with", path.display())]
    UnusableCaKey {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    /// `ca.key` does not belong to `ca.pem`.
    #[error("{} is not the private key of {}", key.display(), certificate.display())]
    KeyDoesNotMatch { key: PathBuf, certificate: PathBuf },
    /// `trust-domain` does not hold a valid trust domain.
    #[error("{} does not hold a valid trust domain (found {found:?})", path.display())]
    UnusableTrustDomain { path: PathBuf, found: String },
    /// The CA's certificate file is missing, unreadable or not PEM.
    #[error(transparent)]
    CertificateFile(#[from] tls::TlsFileError),
    /// A CA file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// rcgen refused to build or sign a certificate.
    #[error("cannot generate the certificate")]
    Generate(#[source] rcgen::Error),
    /// What rcgen produced does not parse back (a bug, not an input error).
    #[error("the generated certificate cannot be read back")]
    Readback(#[source] tls::InvalidCertificate),
    /// The issuer name in a new certificate differs from the CA's subject, so
    /// the certificate would not chain; happens with a foreign CA whose
    /// subject rcgen cannot reproduce byte for byte.
    #[error(
        "cannot reproduce the CA certificate's subject name exactly, so certificates issued \
         from it would not verify; create a CA with `pgrollout ca init`"
    )]
    IssuerNameMismatch,
    /// The operating system's random number generator failed.
    #[error("the system's random number generator failed")]
    Random,
}
