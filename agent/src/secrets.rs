//! Database passwords: read on this machine only, held in a type that never
//! prints its contents, and handed to the PostgreSQL driver and nowhere else.
//!
//! Precedence, as libpq's (issue 21): `password_env`, else `password_file`,
//! else the target's `passfile`, else libpq's default passfile — `PGPASSFILE`
//! or `~/.pgpass`, skipped when absent or without a matching entry. A
//! passfile with group or world access is refused, as libpq refuses it
//! (root-owned: group read allowed, as since PostgreSQL 14).

use std::fmt;
use std::path::Path;

use crate::config::TargetConfig;

/// A password that redacts itself in `Debug` and `Display`, so it cannot leak
/// into a log line, an error or a trace attribute by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// The secret itself; call only where it is handed to the driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a configured password source gave nothing. Never carries the secret.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("environment variable {name} (password_env of target {target}) is not set")]
    EnvMissing { target: String, name: String },
    #[error("cannot read password_file {path} of target {target}")]
    FileUnreadable {
        target: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read passfile {path} of target {target}")]
    PassfileUnreadable {
        target: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "passfile {path} of target {target} has group or world access (mode {mode:04o}); libpq ignores such a \
         file: chmod 0600 {path}"
    )]
    PassfileExposed {
        target: String,
        path: String,
        mode: u32,
    },
    #[error("passfile {path} has no entry for {host}:{port}:{dbname}:{user} (target {target})")]
    NoPassfileEntry {
        target: String,
        path: String,
        host: String,
        port: u16,
        dbname: String,
        user: String,
    },
}

/// Resolves the target's password from its configured source, if any.
/// Read on every connection so a rotated password is picked up without restart.
pub fn resolve_password(target: &TargetConfig) -> Result<Option<Password>, PasswordError> {
    if let Some(name) = &target.password_env {
        return match std::env::var(name) {
            Ok(value) => Ok(Some(Password(value))),
            Err(_) => Err(PasswordError::EnvMissing {
                target: target.name.clone(),
                name: name.clone(),
            }),
        };
    }
    if let Some(path) = &target.password_file {
        let text =
            std::fs::read_to_string(path).map_err(|source| PasswordError::FileUnreadable {
                target: target.name.clone(),
                path: path.display().to_string(),
                source,
            })?;
        let first_line = text.lines().next().unwrap_or_default();
        return Ok(Some(Password(first_line.to_owned())));
    }
    if let Some(path) = &target.passfile {
        return lookup_passfile(path, target).map(Some);
    }
    let Some(path) = default_passfile() else {
        return Ok(None);
    };
    if !path.is_file() {
        return Ok(None);
    }
    match lookup_passfile(&path, target) {
        Ok(password) => Ok(Some(password)),
        // No entry: the server may not need a password (libpq goes on too).
        Err(PasswordError::NoPassfileEntry { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// libpq's default passfile: `PGPASSFILE`, else `~/.pgpass`.
fn default_passfile() -> Option<std::path::PathBuf> {
    match std::env::var_os("PGPASSFILE") {
        Some(path) if !path.is_empty() => Some(path.into()),
        _ => std::env::var_os("HOME").map(|home| Path::new(&home).join(".pgpass")),
    }
}

/// libpq's check: no group or world access, except group read on a file
/// owned by root.
fn check_passfile_mode(path: &Path, target: &TargetConfig) -> Result<(), PasswordError> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).map_err(|source| PasswordError::PassfileUnreadable {
        target: target.name.clone(),
        path: path.display().to_string(),
        source,
    })?;
    let mode = metadata.mode() & 0o777;
    let forbidden = if metadata.uid() == 0 { 0o037 } else { 0o077 };
    if mode & forbidden != 0 {
        return Err(PasswordError::PassfileExposed {
            target: target.name.clone(),
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

fn lookup_passfile(path: &Path, target: &TargetConfig) -> Result<Password, PasswordError> {
    check_passfile_mode(path, target)?;
    let text =
        std::fs::read_to_string(path).map_err(|source| PasswordError::PassfileUnreadable {
            target: target.name.clone(),
            path: path.display().to_string(),
            source,
        })?;
    let wanted = [
        target.host.as_str(),
        &target.port.to_string(),
        target.dbname.as_str(),
        target.user.as_str(),
    ];
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#') && !line.trim().is_empty())
        .filter_map(split_pgpass_line)
        .find(|fields| {
            fields[..4]
                .iter()
                .zip(wanted)
                .all(|(field, value)| field == "*" || field == value)
        })
        .map(|mut fields| Password(fields.swap_remove(4)))
        .ok_or_else(|| PasswordError::NoPassfileEntry {
            target: target.name.clone(),
            path: path.display().to_string(),
            host: target.host.clone(),
            port: target.port,
            dbname: target.dbname.clone(),
            user: target.user.clone(),
        })
}

/// Splits `host:port:db:user:password`, honouring `\:` and `\\` like libpq.
fn split_pgpass_line(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.push(chars.next().unwrap_or('\\')),
            ':' if fields.len() < 5 => fields.push(String::new()),
            _ => fields.last_mut()?.push(c),
        }
    }
    (fields.len() == 5).then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> TargetConfig {
        TargetConfig {
            name: "main".into(),
            labels: Default::default(),
            host: "db.internal".into(),
            port: 5433,
            dbname: "perseus".into(),
            user: "deployer".into(),
            password_env: None,
            password_file: None,
            passfile: None,
            ledger_schema: "pgrollout".into(),
            post_commit_connections: 1,
            sslmode: Default::default(),
            sslrootcert: None,
        }
    }

    /// A passfile as libpq wants it: 0600.
    fn write_private(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    #[test]
    fn pgpass_matches_wildcards_and_escapes() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("pgpass");
        write_private(
            &path,
            "# comment\nother:5433:perseus:deployer:nope\n*:5433:perseus:deployer:s3cr\\:et\\\\x\n",
        );
        let password = lookup_passfile(&path, &target()).expect("entry");
        assert_eq!(password.expose(), "s3cr:et\\x");
    }

    #[test]
    fn missing_entry_names_the_lookup_but_not_a_secret() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("pgpass");
        write_private(&path, "db.internal:5432:perseus:deployer:hunter2\n");
        let error = lookup_passfile(&path, &target())
            .expect_err("no match")
            .to_string();
        assert!(
            error.contains("db.internal:5433:perseus:deployer"),
            "{error}"
        );
        assert!(!error.contains("hunter2"));
    }

    #[test]
    fn a_passfile_others_can_read_is_refused_like_libpq_does() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("pgpass");
        std::fs::write(&path, "*:*:*:*:hunter2\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).expect("chmod");
        let error = lookup_passfile(&path, &target())
            .expect_err("world-readable")
            .to_string();
        assert!(error.contains("chmod 0600"), "{error}");
        assert!(!error.contains("hunter2"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            lookup_passfile(&path, &target()).expect("0600").expose(),
            "hunter2"
        );
    }

    #[test]
    fn password_never_formats_its_value() {
        let password = Password("hunter2".into());
        assert_eq!(
            format!("{password} {password:?}"),
            "<redacted> Password(<redacted>)"
        );
    }
}
