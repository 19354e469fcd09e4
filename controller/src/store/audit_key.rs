//! The audit log's key: a 256-bit HMAC key kept in a file outside the store,
//! so that whoever can write the store file cannot forge an entry or
//! recompute the chain after an edit. Created 0600 on first start.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

#[derive(Debug, thiserror::Error)]
pub enum AuditKeyError {
    #[error(
        "the audit key {path} is missing, but {signed} audit entries were signed with it; restore the key \
         from its backup (a new key would make every signed entry unverifiable)"
    )]
    Missing { path: String, signed: i64 },
    #[error("cannot read the audit key {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the audit key {path} is not 64 hex digits; restore it from its backup")]
    Malformed { path: String },
    #[error("cannot create the audit key {path}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The key. Never printed: `Debug` shows only where it came from.
pub struct AuditKey {
    key: hmac::Key,
    path: PathBuf,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKey({})", self.path.display())
    }
}

/// What opening the key found: an existing key, or one created just now.
#[derive(Debug)]
pub struct OpenedKey {
    pub key: AuditKey,
    pub created: bool,
}

impl AuditKey {
    /// Reads the key at `path`, or creates it when it does not exist and no
    /// entry was signed yet (`signed_entries`): a missing key with signed
    /// entries is refused, never silently replaced.
    pub fn open_or_create(path: &Path, signed_entries: i64) -> Result<OpenedKey, AuditKeyError> {
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim())
                    .ok()
                    .filter(|b| b.len() == 32)
                    .ok_or(AuditKeyError::Malformed { path: name })?;
                warn_if_readable_by_others(path);
                Ok(OpenedKey {
                    key: AuditKey::from_bytes(&bytes, path),
                    created: false,
                })
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if signed_entries > 0 {
                    return Err(AuditKeyError::Missing {
                        path: name,
                        signed: signed_entries,
                    });
                }
                let bytes =
                    create(path).map_err(|source| AuditKeyError::Create { path: name, source })?;
                Ok(OpenedKey {
                    key: AuditKey::from_bytes(&bytes, path),
                    created: true,
                })
            }
            Err(source) => Err(AuditKeyError::Read { path: name, source }),
        }
    }

    fn from_bytes(bytes: &[u8], path: &Path) -> Self {
        AuditKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
            path: path.to_owned(),
        }
    }

    /// The authentication code of the entry at `seq` whose hash is `hash`.
    /// The hash covers the entry and, through the chain, all before it.
    pub fn mac(&self, seq: i64, hash: &str) -> String {
        hex::encode(hmac::sign(&self.key, &message(seq, hash)).as_ref())
    }

    /// Whether `mac` is the code of (`seq`, `hash`), compared in constant time.
    pub fn verify(&self, seq: i64, hash: &str, mac: &str) -> bool {
        hex::decode(mac)
            .map(|tag| hmac::verify(&self.key, &message(seq, hash), &tag).is_ok())
            .unwrap_or(false)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn message(seq: i64, hash: &str) -> Vec<u8> {
    let mut message = b"pgrollout audit entry v1\0".to_vec();
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(hash.as_bytes());
    message
}

/// Writes a new random key, 0600 from the first byte (never created wider and
/// narrowed after), fsynced.
fn create(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| std::io::Error::other("the system random generator failed"))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(format!("{}\n", hex::encode(&bytes)).as_bytes())?;
    file.sync_all()?;
    Ok(bytes)
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "the audit key is readable or writable by others: anyone who can read it can forge audit entries; chmod 600 it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_is_private_reopens_the_same_and_is_never_replaced() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("k");
        let first = AuditKey::open_or_create(&path, 0).expect("create");
        assert!(first.created);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mac = first.key.mac(7, "abc");
        let again = AuditKey::open_or_create(&path, 3).expect("reopen");
        assert!(!again.created);
        assert!(again.key.verify(7, "abc", &mac));
        assert!(!again.key.verify(8, "abc", &mac));
        assert!(!again.key.verify(7, "abd", &mac));
        assert!(!again.key.verify(7, "abc", "zz"));

        std::fs::remove_file(&path).expect("rm");
        let missing = AuditKey::open_or_create(&path, 3).expect_err("refused");
        assert!(matches!(missing, AuditKeyError::Missing { signed: 3, .. }));
        assert!(!path.exists());
    }
}
