//! Temporary directories that survive a failing test, for post-mortem.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use tempfile::TempDir;

/// Environment variable that keeps every [`TestDir`], passing tests included.
const KEEP_ENV: &str = "PGROLLOUT_TEST_KEEP";
/// Environment variable naming the directory that holds the clusters' directories.
const CLUSTER_PARENT_ENV: &str = "PGROLLOUT_TEST_PG_DIR";
/// A memory-backed directory for clusters, used when it has this much room (Docker's default is only 64 MiB).
const SHM_DIR: &str = "/dev/shm";
const SHM_MIN_FREE_MIB: u64 = 1024;

/// A temporary directory under the system temp dir, removed on drop unless the thread is panicking (a failed
/// assertion) or `PGROLLOUT_TEST_KEEP` is set; when kept, its path is printed to stderr.
///
/// Note that a test returning `Err` does not panic, so its directories are removed: the harness's errors carry
/// the output a reader needs (server log lines, process output), and `PGROLLOUT_TEST_KEEP=1` keeps the rest.
#[derive(Debug)]
pub struct TestDir {
    /// `None` only while dropping.
    dir: Option<TempDir>,
    label: String,
}

impl TestDir {
    /// Creates `/tmp/pgrollout-<label>-XXXXXX` (or under `$TMPDIR`), readable by everyone (mode 0755) so a
    /// server run as another OS user can reach its files.
    pub fn new(label: &str) -> Result<TestDir> {
        Self::new_in(&std::env::temp_dir(), label)
    }

    /// Like [`TestDir::new`], under `parent`.
    pub fn new_in(parent: &Path, label: &str) -> Result<TestDir> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix(&format!("pgrollout-{label}-"))
            .permissions(std::fs::Permissions::from_mode(0o755))
            .tempdir_in(parent)
            .with_context(|| {
                format!("creating a temp dir for {label} under {}", parent.display())
            })?;
        Ok(TestDir {
            dir: Some(dir),
            label: label.to_owned(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        match &self.dir {
            Some(dir) => dir.path(),
            None => Path::new(""),
        }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        if std::thread::panicking() || std::env::var_os(KEEP_ENV).is_some() {
            let kept = dir.keep();
            eprintln!("pgrollout-tests: kept {} in {}", self.label, kept.display());
        }
        // Otherwise TempDir's own drop removes it.
    }
}

/// Where clusters' directories go: `$PGROLLOUT_TEST_PG_DIR` if set, else `/dev/shm` when it has room, else the
/// temp dir. A cluster is about 1000 small files: on the ext4 disk of the CI machine, writing them takes about
/// 0.6 s of kernel time, in memory about 0.05 s.
pub(crate) fn cluster_parent_dir() -> PathBuf {
    static PARENT: OnceLock<PathBuf> = OnceLock::new();
    PARENT
        .get_or_init(|| {
            if let Some(dir) = std::env::var_os(CLUSTER_PARENT_ENV) {
                return PathBuf::from(dir);
            }
            match free_mib(Path::new(SHM_DIR)) {
                Some(free) if free >= SHM_MIN_FREE_MIB => PathBuf::from(SHM_DIR),
                _ => std::env::temp_dir(),
            }
        })
        .clone()
}

/// Free space under `dir` as `df` reports it (std has no statvfs, and the workspace forbids `unsafe` libc).
fn free_mib(dir: &Path) -> Option<u64> {
    let output = std::process::Command::new("df")
        .args(["--output=avail", "-BM"])
        .arg(dir)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "Avail\n24G" style with -BM: "Avail\n24576M".
    text.lines()
        .nth(1)?
        .trim()
        .trim_end_matches('M')
        .parse()
        .ok()
}
