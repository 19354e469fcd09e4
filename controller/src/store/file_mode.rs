//! The store's files are the controller's alone: created 0600, and narrowed
//! to 0600 (with a warning) when an older controller left them wider. SQLite
//! creates its -wal, -shm and -journal files with the database file's mode,
//! so a private database file keeps its companions private too.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The database file and the companions SQLite may create beside it.
fn store_files(database: &Path) -> Vec<PathBuf> {
    let mut files = vec![database.to_owned()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        files.push(PathBuf::from(name));
    }
    files
}

/// Creates the database file 0600 when it is missing, and narrows every
/// existing store file to 0600.
pub fn make_private(database: &Path) -> std::io::Result<()> {
    if !database.exists() {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(database)
        {
            Ok(_) => {}
            // Another process created it meanwhile: narrowed below like any other.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
    }
    for file in store_files(database) {
        let Ok(metadata) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            tracing::warn!(
                path = %file.display(),
                was = format!("{mode:o}"),
                "store file was readable or writable by others; narrowed to 600"
            );
        }
    }
    Ok(())
}
