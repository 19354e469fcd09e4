//! Certificates with rcgen: the self-signed CA, leaves signed by it, and the
//! CA rebuilt from its certificate and key as read back from disk.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use pgrollout_shared::identity::{is_valid_segment, Role, SpiffeId};
use pgrollout_shared::tls;
use rcgen::string::{Ia5String, PrintableString};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::ParsedExtension;
use x509_parser::x509::X509Name;

use super::{CaError, IssuedCertificate, LeafRequest, SecretPem};

/// The last second X.509 can express (9999-12-31 23:59:59 UTC).
const LAST_X509_SECOND: u64 = 253_402_300_799;

/// A CA that can sign leaf certificates: its certificate and signing key.
pub struct CertificateAuthority {
    trust_domain: String,
    certificate: CertificateDer<'static>,
    certificate_pem: String,
    /// The DER of the CA's subject name; every issued certificate's issuer
    /// name must equal it byte for byte, or chains will not build.
    subject_der: Vec<u8>,
    not_after: SystemTime,
    issuer: rcgen::Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("not_after", &tls::format_utc(self.not_after))
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a new self-signed CA for `trust_domain` with a fresh ECDSA
    /// P-256 key: basic constraints CA (path length 0: it signs only leaves),
    /// key usage certificate and CRL signing.
    pub fn generate(
        trust_domain: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Self, CaError> {
        check_segment("trust domain", trust_domain)?;
        let key = KeyPair::generate().map_err(CaError::Generate)?;
        let serial = random_serial()?;
        // Part of the serial in the name makes every CA's name unique, so a
        // certificate from another CA of the same trust domain is reported as
        // "unknown issuer", not as a bad signature, and a controller trusting
        // an old and a new CA during a rotation can tell them apart.
        let short_id = hex::encode(&serial.to_bytes()[..4]);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "pgrollout");
        params.distinguished_name.push(
            DnType::CommonName,
            format!("pgrollout CA {trust_domain} {short_id}"),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(serial);
        set_validity(&mut params, not_before, not_after)?;
        let certificate = params.self_signed(&key).map_err(CaError::Generate)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(certificate.der())
            .map_err(|error| CaError::Readback(tls::InvalidCertificate::Der(error)))?;
        let subject_der = parsed.subject().as_raw().to_vec();
        Ok(CertificateAuthority {
            trust_domain: trust_domain.to_owned(),
            certificate: certificate.der().clone(),
            certificate_pem: certificate.pem(),
            subject_der,
            not_after,
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// Rebuilds a CA from the PEM texts of its certificate and key (the
    /// paths only name the files in errors). Refuses a certificate that is
    /// not a CA and a key that is not the certificate's.
    pub fn from_pem(
        trust_domain: &str,
        certificate_pem: String,
        certificate_path: &Path,
        key_pem: &str,
        key_path: &Path,
    ) -> Result<Self, CaError> {
        check_segment("trust domain", trust_domain)?;
        let unusable = |reason: &str| CaError::UnusableCaCertificate {
            path: certificate_path.to_owned(),
            reason: reason.to_owned(),
        };
        let certificate = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
            .map_err(|_| unusable("it holds no PEM certificate"))?;
        let key = KeyPair::from_pem(key_pem).map_err(|source| CaError::UnusableCaKey {
            path: key_path.to_owned(),
            source,
        })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&certificate)
            .map_err(|_| unusable("it is not a valid X.509 certificate"))?;
        if !parsed.is_ca() {
            return Err(unusable(
                "it is not a CA certificate (basic constraints do not say CA:TRUE)",
            ));
        }
        if key.public_key_raw() != parsed.public_key().subject_public_key.data.as_ref() {
            return Err(CaError::KeyDoesNotMatch {
                key: key_path.to_owned(),
                certificate: certificate_path.to_owned(),
            });
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(parsed.subject()).ok_or_else(|| {
            unusable("its subject name uses a string type pgrollout cannot reproduce")
        })?;
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        if let Some(key_id) = subject_key_identifier(&parsed) {
            // Issued certificates' authority key identifier must equal the
            // CA's subject key identifier, whatever method computed it.
            params.key_identifier_method = KeyIdMethod::PreSpecified(key_id);
        }
        let subject_der = parsed.subject().as_raw().to_vec();
        let not_after = tls::inspect(&certificate)
            .map_err(|_| unusable("it is not a valid X.509 certificate"))?
            .not_after;
        Ok(CertificateAuthority {
            trust_domain: trust_domain.to_owned(),
            certificate,
            certificate_pem,
            subject_der,
            not_after,
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// The CA certificate (the trust anchor both sides configure).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// The CA certificate as PEM, as written to `ca.pem`.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The CA's private key as PEM, for writing `ca.key` and nothing else.
    pub(super) fn private_key_pem(&self) -> SecretPem {
        SecretPem(self.issuer.key().serialize_pem())
    }

    /// Issues a leaf certificate valid from `not_before` to `not_after`
    /// (whole seconds; X.509 stores nothing finer). The CLI passes
    /// "now − [`super::CLOCK_SKEW_ALLOWANCE`]" and "now + validity"; tests pass
    /// a window in the past to get an expired certificate.
    ///
    /// The leaf gets a fresh ECDSA P-256 key, a random 126-bit serial, CN =
    /// the identity's display name, a URI SAN with its SPIFFE id, basic
    /// constraints CA:FALSE, key usage digital signature and extended key
    /// usage client authentication (plus server authentication and the DNS
    /// and IP SANs for a controller).
    pub fn issue(
        &self,
        request: &LeafRequest,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCertificate, CaError> {
        let identity = self.identity_for(request)?;
        if not_after > self.not_after {
            return Err(CaError::OutlivesCa {
                ca_not_after: self.not_after,
                not_after,
            });
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, identity.display_name());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match identity.role {
            Role::Controller { .. } => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Role::Agent { .. } | Role::Operator { .. } => {
                vec![ExtendedKeyUsagePurpose::ClientAuth]
            }
        };
        params.subject_alt_names = subject_alternative_names(&identity, request)?;
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, not_before, not_after)?;

        let key = KeyPair::generate().map_err(CaError::Generate)?;
        let certificate = params
            .signed_by(&key, &self.issuer)
            .map_err(CaError::Generate)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(certificate.der())
            .map_err(|error| CaError::Readback(tls::InvalidCertificate::Der(error)))?;
        if parsed.issuer().as_raw() != self.subject_der.as_slice() {
            return Err(CaError::IssuerNameMismatch);
        }
        let info = tls::inspect(certificate.der()).map_err(CaError::Readback)?;
        Ok(IssuedCertificate {
            identity,
            certificate_pem: certificate.pem(),
            private_key_pem: SecretPem(key.serialize_pem()),
            info,
        })
    }

    /// The SPIFFE id a request asks for, with every part validated.
    fn identity_for(&self, request: &LeafRequest) -> Result<SpiffeId, CaError> {
        let td = &self.trust_domain;
        let has_addresses = !request.dns_names.is_empty() || !request.ip_addresses.is_empty();
        match &request.role {
            Role::Agent { zone, name } => {
                check_segment("zone", zone)?;
                check_segment("name", name)?;
                if has_addresses {
                    return Err(CaError::AddressesOnClientCertificate);
                }
                Ok(SpiffeId::agent(td, zone, name))
            }
            Role::Operator { name } => {
                check_segment("name", name)?;
                if has_addresses {
                    return Err(CaError::AddressesOnClientCertificate);
                }
                Ok(SpiffeId::operator(td, name))
            }
            Role::Controller { name } => {
                check_segment("name", name)?;
                if !has_addresses {
                    return Err(CaError::ControllerWithoutAddress);
                }
                Ok(SpiffeId::controller(td, name))
            }
        }
    }
}

fn check_segment(what: &'static str, value: &str) -> Result<(), CaError> {
    if is_valid_segment(value) {
        Ok(())
    } else {
        Err(CaError::InvalidSegment {
            what,
            value: value.to_owned(),
        })
    }
}

fn subject_alternative_names(
    identity: &SpiffeId,
    request: &LeafRequest,
) -> Result<Vec<SanType>, CaError> {
    let uri = Ia5String::try_from(identity.to_string()).map_err(CaError::Generate)?;
    let mut names = vec![SanType::URI(uri)];
    for dns_name in &request.dns_names {
        // rustls matches server names with this same check, so a name it
        // refuses here could never be connected to.
        let valid = rustls_pki_types::DnsName::try_from(dns_name.as_str()).is_ok();
        let ia5 = Ia5String::try_from(dns_name.as_str())
            .ok()
            .filter(|_| valid);
        names.push(SanType::DnsName(
            ia5.ok_or_else(|| CaError::InvalidDnsName(dns_name.clone()))?,
        ));
    }
    names.extend(request.ip_addresses.iter().copied().map(SanType::IpAddress));
    Ok(names)
}

fn set_validity(
    params: &mut CertificateParams,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<(), CaError> {
    if not_after <= not_before {
        return Err(CaError::InvalidValidity("it must end after it starts"));
    }
    let representable = |time: SystemTime| {
        time.duration_since(UNIX_EPOCH)
            .is_ok_and(|since| since.as_secs() <= LAST_X509_SECOND)
    };
    if !representable(not_before) || !representable(not_after) {
        return Err(CaError::InvalidValidity(
            "it must lie between 1970 and the end of 9999",
        ));
    }
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    Ok(())
}

/// 16 random bytes with the top bits set to `01`: positive, always 16 bytes
/// long (so every serial prints as 32 hex digits) and 126 bits of entropy.
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| CaError::Random)?;
    bytes[0] = (bytes[0] & 0x3f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// The CA's subject as rcgen re-encodes it; `None` for string types rcgen
/// cannot write back unchanged (the issuer-name check catches the rest).
fn distinguished_name(name: &X509Name<'_>) -> Option<DistinguishedName> {
    let mut result = DistinguishedName::new();
    for attribute in name.iter_attributes() {
        let oid: Vec<u64> = attribute.attr_type().iter()?.collect();
        let value = attribute.attr_value();
        let text = std::str::from_utf8(value.data).ok()?;
        let value = match value.header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text.to_owned()),
            Tag::PrintableString => DnValue::PrintableString(PrintableString::try_from(text).ok()?),
            Tag::Ia5String => DnValue::Ia5String(Ia5String::try_from(text).ok()?),
            _ => return None,
        };
        result.push(DnType::from_oid(&oid), value);
    }
    Some(result)
}

fn subject_key_identifier(certificate: &X509Certificate<'_>) -> Option<Vec<u8>> {
    certificate
        .extensions()
        .iter()
        .find_map(|extension| match extension.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(key_id) => Some(key_id.0.to_vec()),
            _ => None,
        })
}
