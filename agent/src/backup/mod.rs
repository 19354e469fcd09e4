//! Backup files: every routine a job touches, captured before it changes, in
//! one file per job (DESIGN §3), fsynced once and read back to verify.
//!
//! The file is plain SQL a DBA can read at 3 a.m. and replay with
//! `psql -1 -f`; a one-line JSON manifest in its header records, for each
//! routine, where its definition sits in the body and its SHA-256, so the
//! agent can verify the file byte for byte before trusting it.

use std::io::Write;
use std::path::{Path, PathBuf};

pub mod retention;

use serde::{Deserialize, Serialize};

use crate::sql::{sha256_hex, RoutineSnapshot};

const MANIFEST_PREFIX: &str = "-- manifest: ";
const FORMAT_VERSION: u32 = 1;

/// Who and what a backup belongs to, recorded in its manifest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupHeader {
    pub job_id: String,
    pub attempt: u32,
    pub rollout_id: String,
    pub plan_id: String,
    pub target: String,
    pub label: String,
    pub taken_at: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Manifest {
    format: u32,
    header: BackupHeader,
    routines: Vec<ManifestEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct ManifestEntry {
    snapshot: ManifestSnapshot,
    /// Byte range of the definition within the body (after the manifest line).
    offset: usize,
    length: usize,
    definition_sha256: Option<String>,
}

/// A snapshot without its definition text, which lives in the body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct ManifestSnapshot {
    requested: String,
    existed: bool,
    identity: Option<String>,
    schema: Option<String>,
    owner: Option<String>,
    acl: Option<String>,
    comment: Option<String>,
}

/// A backup written and verified: where it is and the whole file's SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenBackup {
    pub path: PathBuf,
    pub sha256: String,
}

/// A backup read back whose every checksum matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedBackup {
    pub header: BackupHeader,
    pub routines: Vec<RoutineSnapshot>,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot write backup {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read backup {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("backup {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// Writes the backup atomically (temp file, fsync, rename, fsync directory),
/// then reads it back and verifies every checksum before returning.
pub fn write_backup(
    backup_dir: &Path,
    header: &BackupHeader,
    snapshots: &[RoutineSnapshot],
) -> Result<WrittenBackup, BackupError> {
    let dir = backup_dir.join(safe_file_part(&header.target));
    let path = dir.join(file_name(header));
    let write_error = |source| BackupError::Write {
        path: path.clone(),
        source,
    };
    create_private_dir(&dir).map_err(write_error)?;
    let bytes = render(header, snapshots);
    let temporary = path.with_extension("sql.partial");
    {
        let mut file = open_private(&temporary).map_err(write_error)?;
        file.write_all(&bytes).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
    }
    std::fs::rename(&temporary, &path).map_err(write_error)?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(write_error)?;
    let expected = sha256_bytes(&bytes);
    let verified = read_and_verify(&path)?;
    if verified.sha256 != expected {
        return Err(BackupError::Corrupt {
            path,
            reason: "the file read back differs from what was written".into(),
        });
    }
    Ok(WrittenBackup {
        path,
        sha256: expected,
    })
}

/// Reads a backup and checks its manifest and every definition's SHA-256.
pub fn read_and_verify(path: &Path) -> Result<VerifiedBackup, BackupError> {
    let bytes = std::fs::read(path).map_err(|source| BackupError::Read {
        path: path.to_owned(),
        source,
    })?;
    let corrupt = |reason: String| BackupError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| corrupt("not valid UTF-8".into()))?;
    let manifest_start = text
        .find(&format!("\n{MANIFEST_PREFIX}"))
        .ok_or_else(|| corrupt("no manifest line".into()))?
        + 1;
    let manifest_end = text[manifest_start..]
        .find('\n')
        .map(|end| manifest_start + end)
        .ok_or_else(|| corrupt("manifest line is not terminated".into()))?;
    let manifest: Manifest =
        serde_json::from_str(&text[manifest_start + MANIFEST_PREFIX.len()..manifest_end])
            .map_err(|error| corrupt(format!("manifest does not parse: {error}")))?;
    if manifest.format != FORMAT_VERSION {
        return Err(corrupt(format!("unknown format {}", manifest.format)));
    }
    let body = &text[manifest_end + 1..];
    let mut routines = Vec::with_capacity(manifest.routines.len());
    for entry in manifest.routines {
        let definition = match &entry.definition_sha256 {
            None => None,
            Some(expected) => {
                let slice = body
                    .get(entry.offset..entry.offset + entry.length)
                    .ok_or_else(|| {
                        corrupt(format!(
                            "definition of {} is truncated",
                            entry.snapshot.requested
                        ))
                    })?;
                if &sha256_hex(slice) != expected {
                    return Err(corrupt(format!(
                        "SHA-256 of {} does not match the manifest",
                        entry.snapshot.requested
                    )));
                }
                Some(slice.to_owned())
            }
        };
        let s = entry.snapshot;
        routines.push(RoutineSnapshot {
            requested: s.requested,
            existed: s.existed,
            identity: s.identity,
            schema: s.schema,
            definition,
            owner: s.owner,
            acl: s.acl,
            comment: s.comment,
        });
    }
    Ok(VerifiedBackup {
        header: manifest.header,
        routines,
        sha256: sha256_bytes(&bytes),
    })
}

fn render(header: &BackupHeader, snapshots: &[RoutineSnapshot]) -> Vec<u8> {
    let mut body = String::new();
    let mut entries = Vec::with_capacity(snapshots.len());
    for snapshot in snapshots {
        let (offset, length) = match &snapshot.definition {
            Some(definition) => {
                body.push_str(&format!(
                    "-- {} (owner {}, acl {})\n",
                    snapshot.identity.as_deref().unwrap_or(&snapshot.requested),
                    snapshot.owner.as_deref().unwrap_or("?"),
                    snapshot.acl.as_deref().unwrap_or("default"),
                ));
                let offset = body.len();
                body.push_str(definition);
                body.push_str(";\n\n");
                (offset, definition.len())
            }
            None => {
                body.push_str(&format!(
                    "-- {} did not exist before this job\n\n",
                    snapshot.requested
                ));
                (0, 0)
            }
        };
        entries.push(ManifestEntry {
            snapshot: ManifestSnapshot {
                requested: snapshot.requested.clone(),
                existed: snapshot.existed,
                identity: snapshot.identity.clone(),
                schema: snapshot.schema.clone(),
                owner: snapshot.owner.clone(),
                acl: snapshot.acl.clone(),
                comment: snapshot.comment.clone(),
            },
            offset,
            length,
            definition_sha256: snapshot.definition_sha256(),
        });
    }
    let manifest = Manifest {
        format: FORMAT_VERSION,
        header: header.clone(),
        routines: entries,
    };
    // serde_json escapes newlines, so the manifest is always one line.
    let manifest_json = serde_json::to_string(&manifest).unwrap_or_default();
    let mut text = format!(
        "-- pgrollout backup of {} routine(s) before job {} on target {}, taken {}\n\
         -- restore by hand: psql -1 -f <this file> re-creates the routines below as they were\n\
         {MANIFEST_PREFIX}{manifest_json}\n",
        snapshots.len(),
        header.job_id,
        header.target,
        header.taken_at,
    );
    text.push_str(&body);
    text.into_bytes()
}

/// `<label>_<yyyymmdd>_<hhmmss>_<job>.sql`, as SEED.md's
/// `reconcilemupstream_20251113_143000.sql` plus the job id for uniqueness.
fn file_name(header: &BackupHeader) -> String {
    let stamp: String = header
        .taken_at
        .chars()
        .filter(|c| c.is_ascii_digit())
        .take(14)
        .collect();
    let (date, time) = stamp.split_at(stamp.len().min(8));
    format!(
        "{}_{}_{}_{}.sql",
        safe_file_part(&header.label),
        date,
        time,
        safe_file_part(&header.job_id)
    )
}

fn safe_file_part(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    if cleaned.is_empty() {
        "unnamed".into()
    } else {
        cleaned
    }
}

fn sha256_bytes(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BackupHeader {
        BackupHeader {
            job_id: "j-1".into(),
            attempt: 1,
            rollout_id: "r-1".into(),
            plan_id: "abc".into(),
            target: "main".into(),
            label: "addarc".into(),
            taken_at: "2026-11-27T14:30:05Z".into(),
        }
    }

    fn snapshots() -> Vec<RoutineSnapshot> {
        vec![
            RoutineSnapshot {
                requested: "\"public\".\"addarc\"(text, text)".into(),
                existed: true,
                identity: Some("addarc(text,text)".into()),
                schema: Some("public".into()),
                definition: Some("CREATE OR REPLACE FUNCTION public.addarc(a text, b text)\n RETURNS void\n LANGUAGE sql\nAS $function$ select 1 $function$\n".into()),
                owner: Some("postgres".into()),
                acl: Some("{postgres=X/postgres,app=X/postgres}".into()),
                comment: Some("adds an arc\nsecond line".into()),
            },
            RoutineSnapshot {
                requested: "\"public\".\"newone\"()".into(),
                existed: false,
                identity: None,
                schema: None,
                definition: None,
                owner: None,
                acl: None,
                comment: None,
            },
        ]
    }

    #[test]
    fn a_written_backup_reads_back_identically() {
        let dir = tempfile::tempdir().expect("dir");
        let written = write_backup(dir.path(), &header(), &snapshots()).expect("write");
        assert!(written
            .path
            .ends_with("main/addarc_20261127_143005_j-1.sql"));
        let verified = read_and_verify(&written.path).expect("verify");
        assert_eq!(verified.routines, snapshots());
        assert_eq!(verified.header, header());
        assert_eq!(verified.sha256, written.sha256);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&written.path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_changed_byte_is_detected() {
        let dir = tempfile::tempdir().expect("dir");
        let written = write_backup(dir.path(), &header(), &snapshots()).expect("write");
        let text = std::fs::read_to_string(&written.path).expect("read");
        std::fs::write(&written.path, text.replace("select 1", "select 2")).expect("tamper");
        let error = read_and_verify(&written.path)
            .expect_err("corrupt")
            .to_string();
        assert!(error.contains("SHA-256 of"), "{error}");
    }
}
