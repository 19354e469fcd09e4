//! The CA directory and the files `ca init` and `ca issue` write.
//!
//! Private keys are created with mode 0600 from their first byte — never
//! chmod-ed afterwards, so there is no moment at which another user could
//! open one. Certificates and the trust-domain file are 0644. Leaf files are
//! replaced atomically (temporary file, fsync, rename), so a process that
//! reloads renewed certificates never reads half a file.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use pgrollout_shared::identity::{is_valid_segment, Role};
use pgrollout_shared::tls::{self, CertificateInfo};

use super::{CaError, CertificateAuthority, IssuedCertificate, CLOCK_SKEW_ALLOWANCE};

/// The CA certificate, PEM: the trust anchor to configure on every side.
pub const CA_CERTIFICATE_FILE: &str = "ca.pem";
/// The CA's private key, PEM, mode 0600: stays on the machine that issues.
pub const CA_KEY_FILE: &str = "ca.key";
/// The SPIFFE trust domain, one line of text.
pub const TRUST_DOMAIN_FILE: &str = "trust-domain";

const PRIVATE_KEY_MODE: u32 = 0o600;
const PUBLIC_FILE_MODE: u32 = 0o644;
/// A CA directory `ca init` creates is the owner's alone: it holds the key.
const CA_DIRECTORY_MODE: u32 = 0o700;

/// What `ca init` wrote.
#[derive(Debug)]
pub struct InitializedCa {
    /// `<dir>/ca.pem`.
    pub certificate: PathBuf,
    /// `<dir>/ca.key`.
    pub private_key: PathBuf,
    /// `<dir>/trust-domain`.
    pub trust_domain_file: PathBuf,
    /// The trust domain written there.
    pub trust_domain: String,
    /// Serial and validity window of the CA certificate.
    pub info: CertificateInfo,
}

/// Where a leaf's certificate and key go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafFiles {
    /// `<prefix>.pem`, mode 0644.
    pub certificate: PathBuf,
    /// `<prefix>.key`, mode 0600.
    pub private_key: PathBuf,
}

impl LeafFiles {
    /// `<prefix>.pem` and `<prefix>.key` (the suffixes are appended, so a
    /// prefix like `certs/dev-1.agent` keeps its dots).
    pub fn with_prefix(prefix: &Path) -> Self {
        let with_suffix = |suffix: &str| {
            let mut path = prefix.as_os_str().to_owned();
            path.push(suffix);
            PathBuf::from(path)
        };
        LeafFiles {
            certificate: with_suffix(".pem"),
            private_key: with_suffix(".key"),
        }
    }

    /// `<dir>/controller-<name>`, `<dir>/operator-<name>` or
    /// `<dir>/agent-<zone>-<name>`, each `.pem` and `.key`.
    pub fn default_in(dir: &Path, role: &Role) -> Self {
        let stem = match role {
            Role::Controller { name } => format!("controller-{name}"),
            Role::Operator { name } => format!("operator-{name}"),
            Role::Agent { zone, name } => format!("agent-{zone}-{name}"),
        };
        Self::with_prefix(&dir.join(stem))
    }
}

/// The validity window the CLI issues with: from a few minutes before `now`
/// (see [`CLOCK_SKEW_ALLOWANCE`]) until `now + validity`.
pub fn validity_window(
    now: SystemTime,
    validity: Duration,
) -> Result<(SystemTime, SystemTime), CaError> {
    if validity.is_zero() {
        return Err(CaError::InvalidValidity("it must be longer than zero"));
    }
    let not_after = now.checked_add(validity).ok_or(CaError::InvalidValidity(
        "it must end before the year 10000",
    ))?;
    let not_before = now.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(now);
    Ok((not_before, not_after))
}

/// `pgrollout ca init`: creates a CA in `dir` (and `dir` itself, mode 0700,
/// if missing). Refuses if any of the CA's files is already there.
pub fn init(
    dir: &Path,
    trust_domain: &str,
    validity: Duration,
    now: SystemTime,
) -> Result<InitializedCa, CaError> {
    let certificate = dir.join(CA_CERTIFICATE_FILE);
    let private_key = dir.join(CA_KEY_FILE);
    let trust_domain_file = dir.join(TRUST_DOMAIN_FILE);
    let already_there = |path: &Path| CaError::AlreadyInitialized {
        dir: dir.to_owned(),
        existing: path.to_owned(),
    };
    // symlink_metadata, so a dangling link also counts as "there".
    let paths = [&certificate, &private_key, &trust_domain_file];
    if let Some(existing) = paths
        .into_iter()
        .find(|path| path.symlink_metadata().is_ok())
    {
        return Err(already_there(existing));
    }
    let (not_before, not_after) = validity_window(now, validity)?;
    let authority = CertificateAuthority::generate(trust_domain, not_before, not_after)?;
    let info = tls::inspect(authority.certificate()).map_err(CaError::Readback)?;

    DirBuilder::new()
        .recursive(true)
        .mode(CA_DIRECTORY_MODE)
        .create(dir)
        .map_err(|source| CaError::Write {
            path: dir.to_owned(),
            source,
        })?;
    let key_pem = authority.private_key_pem();
    let trust_domain_line = format!("{trust_domain}\n");
    let files = [
        (&private_key, key_pem.expose(), PRIVATE_KEY_MODE),
        (&certificate, authority.certificate_pem(), PUBLIC_FILE_MODE),
        (
            &trust_domain_file,
            trust_domain_line.as_str(),
            PUBLIC_FILE_MODE,
        ),
    ];
    let mut written: Vec<&Path> = Vec::new();
    for (path, contents, mode) in files {
        if let Err(error) = write_new_file(path, contents, mode) {
            // Leave no half CA behind: a later `ca init` would refuse it and
            // `ca issue` could not use it.
            for path in written {
                let _ = std::fs::remove_file(path);
            }
            return Err(match error.kind() {
                std::io::ErrorKind::AlreadyExists => already_there(path),
                _ => CaError::Write {
                    path: path.clone(),
                    source: error,
                },
            });
        }
        written.push(path);
    }
    sync_directory(dir)?;
    Ok(InitializedCa {
        certificate,
        private_key,
        trust_domain_file,
        trust_domain: trust_domain.to_owned(),
        info,
    })
}

/// Reads the CA in `dir` back for `pgrollout ca issue`.
pub fn load(dir: &Path) -> Result<CertificateAuthority, CaError> {
    let certificate_path = dir.join(CA_CERTIFICATE_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    let trust_domain_path = dir.join(TRUST_DOMAIN_FILE);
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => CaError::NoCa {
                dir: dir.to_owned(),
                missing: path.to_owned(),
            },
            _ => CaError::Read {
                path: path.to_owned(),
                source,
            },
        })
    };
    let certificate_pem = read(&certificate_path)?;
    let trust_domain_text = read(&trust_domain_path)?;
    let trust_domain = trust_domain_text.trim();
    if !is_valid_segment(trust_domain) {
        return Err(CaError::UnusableTrustDomain {
            path: trust_domain_path,
            found: trust_domain.chars().take(80).collect(),
        });
    }
    let key_pem = read(&key_path)?;
    CertificateAuthority::from_pem(
        trust_domain,
        certificate_pem,
        &certificate_path,
        &key_pem,
        &key_path,
    )
}

/// Writes an issued certificate and its key, replacing earlier files of the
/// same name (that is how a certificate is renewed). The key goes first, so a
/// process reloading on a certificate change finds the matching key.
pub fn write_leaf(issued: &IssuedCertificate, files: &LeafFiles) -> Result<(), CaError> {
    replace_file(
        &files.private_key,
        issued.private_key_pem.expose(),
        PRIVATE_KEY_MODE,
    )?;
    replace_file(
        &files.certificate,
        &issued.certificate_pem,
        PUBLIC_FILE_MODE,
    )
}

/// Creates `path` (which must not exist) with `mode` and writes `contents`
/// durably. Public files get their mode set explicitly, so a restrictive
/// umask cannot make a certificate unreadable to the service that needs it;
/// a private key only ever gets stricter under a umask.
fn write_new_file(path: &Path, contents: &str, mode: u32) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    let written = (|| {
        file.write_all(contents.as_bytes())?;
        if mode != PRIVATE_KEY_MODE {
            file.set_permissions(Permissions::from_mode(mode))?;
        }
        file.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

/// Writes `contents` to a new temporary file next to `path`, then renames it
/// over `path`.
fn replace_file(path: &Path, contents: &str, mode: u32) -> Result<(), CaError> {
    let write_error = |source| CaError::Write {
        path: path.to_owned(),
        source,
    };
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        write_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path does not end in a file name",
        ))
    })?;
    let temporary = directory.join(format!(
        ".{}.{:016x}.tmp",
        file_name.to_string_lossy(),
        fastrand::u64(..)
    ));
    write_new_file(&temporary, contents, mode).map_err(write_error)?;
    if let Err(source) = std::fs::rename(&temporary, path) {
        let _ = std::fs::remove_file(&temporary);
        return Err(write_error(source));
    }
    sync_directory(directory)
}

/// Makes a directory's new entries durable (a rename is only durable once
/// its directory is synced).
fn sync_directory(dir: &Path) -> Result<(), CaError> {
    File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(|source| CaError::Write {
            path: dir.to_owned(),
            source,
        })
}
