//! Backup retention (SEED.md `backup_retention_days`): after a successful
//! deploy, the target's backup files older than the environment's retention
//! are removed. Only files this agent wrote (`*.sql` in the target's backup
//! directory) are considered, and never the one the job just wrote.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// Removes backups in `dir` last modified more than `days` ago, except
/// `keep`; returns how many were removed. A file that cannot be removed is
/// left alone and reported by the caller's log, never fails the deploy.
pub fn prune(dir: &Path, days: u32, keep: &Path, now: SystemTime) -> std::io::Result<usize> {
    let cutoff = now - Duration::from_secs(u64::from(days) * 86_400);
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path == keep || path.extension().and_then(|e| e.to_str()) != Some("sql") {
            continue;
        }
        let metadata = entry.metadata()?;
        if !metadata.is_file() || metadata.modified()? >= cutoff {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "could not remove an expired backup")
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_backups_other_than_the_new_one_are_removed() {
        let dir = tempfile::tempdir().expect("dir");
        let now = SystemTime::now();
        let write = |name: &str, age_days: u64| {
            let path = dir.path().join(name);
            let file = std::fs::File::create(&path).expect("create");
            file.set_modified(now - Duration::from_secs(age_days * 86_400))
                .expect("mtime");
            path
        };
        let old = write("old.sql", 10);
        let recent = write("recent.sql", 1);
        let other = write("notes.txt", 10);
        let kept = write("current.sql", 10);
        assert_eq!(prune(dir.path(), 7, &kept, now).expect("prune"), 1);
        assert!(!old.exists());
        assert!(recent.exists() && other.exists() && kept.exists());
    }
}
