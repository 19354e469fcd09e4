//! Signed statements (issue 19): an operator's approval or request, signed
//! with the operator's own key on the operator's machine, verified by the
//! agent inside the zone. The controller stores and forwards the three byte
//! strings verbatim; holding no operator key, it cannot produce them.
//!
//! The signed bytes are the canonical encoding of a [`Statement`]: a
//! domain-separation prefix, then each field length-prefixed in a fixed
//! order, then the expiry. The agent decodes the very bytes that were signed
//! (never a re-encoding), so what it checks is what the operator signed.

pub mod fleet;
pub mod policy;
pub mod replay;
pub mod sources;
pub mod subject;
pub mod verify;

use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use rustls_pki_types::PrivateKeyDer;

use crate::proto;

/// Prefix of every signed statement: a signature over these bytes can never
/// be mistaken for one over a TLS handshake or any other pgrollout message.
pub const DOMAIN: &[u8] = b"pgrollout-signed-statement-v1\n";

/// The action a statement allows. Each job kind that changes a database
/// needs statements of its own action: an approval of a deploy is not one
/// of a rollback.
pub mod action {
    pub const DEPLOY: &str = "deploy";
    pub const ROLLBACK: &str = "rollback";
    pub const EMERGENCY_ROLLBACK: &str = "emergency-rollback";
    pub const DISABLE: &str = "disable";
    pub const ENABLE: &str = "enable";
    /// Recording a hand-made live state in the ledger (issue 20's adopt).
    pub const ADOPT: &str = "adopt";
    /// Continuing a halted fleet rollout (`pgrollout resume f-…`): signed by
    /// the operator who runs it, alongside the deploy's own statements.
    pub const RESUME: &str = "resume";
}

/// The role a signer claims; the agent's policy decides whether the
/// signer's certificate may claim it.
pub mod role {
    /// Asked for the change (never counts as an approver of it).
    pub const REQUESTER: &str = "requester";
    pub const APPROVER: &str = "approver";
    /// Break-glass: an emergency action with a reason.
    pub const ADMIN: &str = "admin";
}

/// What an operator signs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Statement {
    pub action: String,
    pub role: String,
    /// The plan id (content hash) of a deploy; of an operation, the hash of
    /// what it does (see [`subject::of_operation`]).
    pub plan_id: String,
    pub environment: String,
    pub zone: String,
    pub target: String,
    /// The request the statement belongs to: chosen by the requester's CLI,
    /// carried by every job of the request, so a statement never counts
    /// for another request.
    pub request_id: String,
    /// Why (required of an emergency action).
    pub reason: String,
    pub expires_unix_ms: i64,
}

/// Why bytes are not a statement.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a pgrollout signed statement: {0}")]
pub struct MalformedStatement(pub &'static str);

/// Field limit: a statement is small; anything longer is an attack or a bug.
const MAX_FIELD: usize = 1024;

impl Statement {
    fn fields(&self) -> [&str; 8] {
        [
            &self.action,
            &self.role,
            &self.plan_id,
            &self.environment,
            &self.zone,
            &self.target,
            &self.request_id,
            &self.reason,
        ]
    }

    /// The canonical bytes that are signed.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(DOMAIN);
        for field in self.fields() {
            out.extend_from_slice(&(field.len() as u32).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out.extend_from_slice(&self.expires_unix_ms.to_be_bytes());
        out
    }

    /// The inverse of [`Statement::encode`]; anything else is refused
    /// (trailing bytes included), so one statement has one encoding.
    pub fn decode(bytes: &[u8]) -> Result<Statement, MalformedStatement> {
        let mut rest = bytes
            .strip_prefix(DOMAIN)
            .ok_or(MalformedStatement("wrong prefix"))?;
        let mut take = |n: usize| -> Result<&[u8], MalformedStatement> {
            if rest.len() < n {
                return Err(MalformedStatement("truncated"));
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let mut fields: Vec<String> = Vec::with_capacity(8);
        for _ in 0..8 {
            let len = u32::from_be_bytes(
                take(4)?
                    .try_into()
                    .map_err(|_| MalformedStatement("truncated"))?,
            ) as usize;
            if len > MAX_FIELD {
                return Err(MalformedStatement("field too long"));
            }
            let text = std::str::from_utf8(take(len)?)
                .map_err(|_| MalformedStatement("field not UTF-8"))?;
            fields.push(text.to_owned());
        }
        let expires = i64::from_be_bytes(
            take(8)?
                .try_into()
                .map_err(|_| MalformedStatement("truncated"))?,
        );
        if !rest.is_empty() {
            return Err(MalformedStatement("trailing bytes"));
        }
        let mut it = fields.into_iter();
        let mut next = || it.next().unwrap_or_default();
        Ok(Statement {
            action: next(),
            role: next(),
            plan_id: next(),
            environment: next(),
            zone: next(),
            target: next(),
            request_id: next(),
            reason: next(),
            expires_unix_ms: expires,
        })
    }
}

/// Why an operator's key cannot sign.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error(transparent)]
    File(#[from] crate::tls::TlsFileError),
    #[error("{path}: the key is not a PKCS#8 ECDSA P-256/P-384 or Ed25519 key (re-issue it with `pgrollout ca issue operator`)")]
    UnsupportedKey { path: String },
    #[error("signing failed")]
    Sign,
}

enum Key {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// An operator's key and certificate, loaded once: what the CLI signs with.
pub struct Signer {
    key: Key,
    certificate: Vec<u8>,
    rng: SystemRandom,
}

impl Signer {
    /// Loads the operator's key and certificate (the files the CLI already
    /// uses for mTLS).
    pub fn load(cert: &Path, key: &Path) -> Result<Signer, SigningError> {
        let certificate = crate::tls::load_certs(cert)?
            .into_iter()
            .next()
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default();
        let unsupported = || SigningError::UnsupportedKey {
            path: key.display().to_string(),
        };
        let pkcs8 = match crate::tls::load_private_key(key)? {
            PrivateKeyDer::Pkcs8(der) => der.secret_pkcs8_der().to_vec(),
            _ => return Err(unsupported()),
        };
        Signer::from_pkcs8(&pkcs8, certificate).ok_or_else(unsupported)
    }

    /// From a PKCS#8 key and the DER certificate of its public key.
    pub fn from_pkcs8(pkcs8: &[u8], certificate: Vec<u8>) -> Option<Signer> {
        let rng = SystemRandom::new();
        let key = [
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        ]
        .into_iter()
        .find_map(|alg| EcdsaKeyPair::from_pkcs8(alg, pkcs8, &rng).ok())
        .map(Key::Ecdsa)
        .or_else(|| {
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
                .ok()
                .map(Key::Ed25519)
        })?;
        Some(Signer {
            key,
            certificate,
            rng,
        })
    }

    /// Signs the statement's canonical bytes; the certificate travels with it.
    pub fn sign(&self, statement: &Statement) -> Result<proto::SignedStatement, SigningError> {
        let bytes = statement.encode();
        let signature = match &self.key {
            Key::Ecdsa(key) => key
                .sign(&self.rng, &bytes)
                .map_err(|_| SigningError::Sign)?
                .as_ref()
                .to_vec(),
            Key::Ed25519(key) => key.sign(&bytes).as_ref().to_vec(),
        };
        Ok(proto::SignedStatement {
            statement: bytes,
            signature,
            certificate: self.certificate.clone(),
        })
    }

    /// The public key, for tests that check a certificate matches.
    pub fn public_key(&self) -> &[u8] {
        match &self.key {
            Key::Ecdsa(key) => key.public_key().as_ref(),
            Key::Ed25519(key) => key.public_key().as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Statement {
        Statement {
            action: action::DEPLOY.into(),
            role: role::APPROVER.into(),
            plan_id: "ab".repeat(32),
            environment: "prod".into(),
            zone: "prod".into(),
            target: "main".into(),
            request_id: "req-1".into(),
            reason: String::new(),
            expires_unix_ms: 1_800_000_000_000,
        }
    }

    #[test]
    fn a_statement_decodes_to_itself_and_nothing_else_decodes() {
        let bytes = sample().encode();
        assert_eq!(Statement::decode(&bytes), Ok(sample()));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Statement::decode(&longer).is_err());
        assert!(Statement::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Statement::decode(&bytes[1..]).is_err());
    }

    #[test]
    fn moving_a_byte_between_fields_changes_the_encoding() {
        let mut a = sample();
        a.environment = "prodm".into();
        a.zone = "ain".into();
        let mut b = sample();
        b.environment = "prod".into();
        b.zone = "main".into();
        assert_ne!(a.encode(), b.encode());
    }
}
