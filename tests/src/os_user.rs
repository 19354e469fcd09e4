//! Running PostgreSQL's programs as an unprivileged user when the tests run as root.
//!
//! `initdb` and `postgres` refuse to run as root, and CI runs as root. Then the harness runs them as the
//! `postgres` OS user (which the Debian package creates) through `runuser -u postgres --`, and hands that user
//! the directories it writes to. As a normal user it runs them directly.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// The OS user that runs PostgreSQL when the tests run as root.
const POSTGRES_OS_USER: &str = "postgres";

/// Whether this process runs with effective uid 0.
pub(crate) fn running_as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        // /proc/self belongs to the effective uid; this avoids `unsafe` libc::geteuid (the workspace forbids it).
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata("/proc/self") {
            Ok(meta) => meta.uid() == 0,
            Err(_) => id(&["-u"]).map(|uid| uid == 0).unwrap_or(false),
        }
    })
}

/// A command running `program` as the user PostgreSQL must run as: through `runuser` when root, directly otherwise.
pub(crate) fn postgres_command(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", POSTGRES_OS_USER, "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Gives `path` to the `postgres` OS user when running as root, so the server can write there; a no-op otherwise.
pub(crate) fn hand_over_to_postgres(path: &Path) -> Result<()> {
    if !running_as_root() {
        return Ok(());
    }
    let (uid, gid) = postgres_ids()?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {} to the {POSTGRES_OS_USER} OS user", path.display()))
}

/// Uid and gid of the `postgres` OS user.
fn postgres_ids() -> Result<(u32, u32)> {
    static IDS: OnceLock<Result<(u32, u32), String>> = OnceLock::new();
    IDS.get_or_init(|| {
        let uid = id(&["-u", POSTGRES_OS_USER]).map_err(|e| format!("{e:#}"))?;
        let gid = id(&["-g", POSTGRES_OS_USER]).map_err(|e| format!("{e:#}"))?;
        Ok((uid, gid))
    })
    .clone()
    .map_err(|e| {
        anyhow::anyhow!(
            "running as root, PostgreSQL must run as the `{POSTGRES_OS_USER}` OS user, which was not found \
             ({e}): install the postgresql package or run the tests as a normal user"
        )
    })
}

/// Runs `id <args>` and parses the number it prints.
fn id(args: &[&str]) -> Result<u32> {
    let output = Command::new("id")
        .args(args)
        .output()
        .context("running `id`")?;
    if !output.status.success() {
        bail!(
            "`id {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("`id {}` printed {text:?}", args.join(" ")))
}
