//! A data directory made by `initdb` once and copied for every cluster.
//!
//! `initdb` costs about 0.75 s of CPU; copying its result costs a few tens of milliseconds, which matters when
//! every scenario starts a cluster per zone on a 2-core machine. The template is cached in `target/tmp`, keyed
//! by the PostgreSQL installation and the initdb settings, and shared by test binaries run in parallel (it is
//! built aside and renamed into place, so a reader never sees half of it). Each cluster then gets its own
//! random superuser password after it starts.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::{os_user, TestDir};

/// The superuser the template is made for.
pub(crate) const SUPERUSER: &str = "postgres";
/// The harness's settings file, included from postgresql.conf; each cluster writes its own (it holds the port).
pub(crate) const SETTINGS_FILE: &str = "pgrollout-tests.conf";
/// initdb's arguments besides the data directory and the password file. Part of the cache key: change them and
/// a new template is made.
const INITDB_ARGS: &[&str] = &[
    "-U",
    SUPERUSER,
    "--auth-local=trust",
    "--auth-host=scram-sha-256",
    "-E",
    "UTF8",
    "--locale=C",
    "--no-sync",
];

/// The template data directory for the server programs in `bin_dir`, made on first use.
pub(crate) async fn template_data_dir(bin_dir: &Path) -> Result<PathBuf> {
    static TEMPLATE: OnceCell<PathBuf> = OnceCell::const_new();
    TEMPLATE
        .get_or_try_init(|| make_or_reuse(bin_dir))
        .await
        .cloned()
}

/// Copies the template to `data_dir` (which must not exist), owned by the user PostgreSQL runs as.
pub(crate) fn copy_template(template: &Path, data_dir: &Path) -> Result<()> {
    copy_tree(template, data_dir, true).with_context(|| {
        format!(
            "copying the template cluster {} to {}",
            template.display(),
            data_dir.display()
        )
    })
}

async fn make_or_reuse(bin_dir: &Path) -> Result<PathBuf> {
    let cache_root = cache_root()?;
    let template = cache_root.join(format!("pgrollout-pg-template-{}", cache_key(bin_dir)?));
    if template.join("PG_VERSION").exists() {
        return Ok(template);
    }

    // initdb runs as the server's user, who may not reach target/, so it works in a temp dir of its own.
    let work = TestDir::new_in(&crate::test_dir::cluster_parent_dir(), "pg-template")?;
    os_user::hand_over_to_postgres(work.path())?;
    let password_file = work.path().join("template-password");
    // initdb insists on a password with scram; each cluster replaces it with its own.
    let password: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(24)
        .collect();
    std::fs::write(&password_file, password)
        .with_context(|| format!("writing {}", password_file.display()))?;
    os_user::hand_over_to_postgres(&password_file)?;
    let data_dir = work.path().join("data");
    let output = tokio::process::Command::from(os_user::postgres_command(&bin_dir.join("initdb")))
        .current_dir(work.path())
        .arg("-D")
        .arg(&data_dir)
        .args(INITDB_ARGS)
        .arg("--pwfile")
        .arg(&password_file)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("running initdb")?;
    if !output.status.success() {
        bail!(
            "initdb failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let main_conf = data_dir.join("postgresql.conf");
    let mut conf = std::fs::read_to_string(&main_conf)
        .with_context(|| format!("reading {}", main_conf.display()))?;
    conf.push_str(&format!(
        "\n# Settings of the pgrollout integration tests.\ninclude '{SETTINGS_FILE}'\n"
    ));
    std::fs::write(&main_conf, conf).with_context(|| format!("writing {}", main_conf.display()))?;

    std::fs::create_dir_all(&cache_root)
        .with_context(|| format!("creating {}", cache_root.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".pgrollout-pg-template-")
        .tempdir_in(&cache_root)
        .with_context(|| format!("creating a temp dir in {}", cache_root.display()))?;
    let staged = staging.path().join("data");
    copy_tree(&data_dir, &staged, false).context("caching the template cluster")?;
    if let Err(error) = std::fs::rename(&staged, &template) {
        // Another test binary may have put its template there first: as good as ours.
        if !template.join("PG_VERSION").exists() {
            return Err(error)
                .with_context(|| format!("moving the template cluster to {}", template.display()));
        }
    }
    Ok(template)
}

/// `target/tmp` beside the test executable (`target/<profile>/deps/<test>-<hash>`), like Cargo's
/// `CARGO_TARGET_TMPDIR`; the system temp dir when the executable lives elsewhere.
fn cache_root() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the test executable")?;
    let target = exe.parent().and_then(Path::parent).and_then(Path::parent);
    Ok(match target {
        Some(target) if target.join("CACHEDIR.TAG").exists() => target.join("tmp"),
        _ => std::env::temp_dir(),
    })
}

/// Identifies the installation (its directory and `initdb --version`) and the initdb settings.
fn cache_key(bin_dir: &Path) -> Result<String> {
    let version = std::process::Command::new(bin_dir.join("initdb"))
        .arg("--version")
        .output()
        .context("running initdb --version")?;
    let mut hasher = Sha256::new();
    hasher.update(bin_dir.as_os_str().as_encoded_bytes());
    hasher.update(&version.stdout);
    hasher.update(INITDB_ARGS.join(" ").as_bytes());
    hasher.update(SETTINGS_FILE.as_bytes());
    Ok(hex::encode(&hasher.finalize()[..8]))
}

/// Copies a directory tree, keeping permission bits (PostgreSQL wants its data directory 0700); with
/// `for_server`, the copy is handed to the server's OS user.
fn copy_tree(from: &Path, to: &Path, for_server: bool) -> Result<()> {
    let permissions = std::fs::metadata(from)
        .with_context(|| format!("reading {}", from.display()))?
        .permissions();
    std::fs::create_dir(to).with_context(|| format!("creating {}", to.display()))?;
    std::fs::set_permissions(to, permissions)
        .with_context(|| format!("setting the mode of {}", to.display()))?;
    if for_server {
        os_user::hand_over_to_postgres(to)?;
    }
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry.with_context(|| format!("reading {}", from.display()))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let file_type = entry
            .file_type()
            .with_context(|| format!("reading {}", source.display()))?;
        if file_type.is_dir() {
            copy_tree(&source, &target, for_server)?;
        } else if file_type.is_file() {
            std::fs::copy(&source, &target)
                .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
            if for_server {
                os_user::hand_over_to_postgres(&target)?;
            }
        } else {
            bail!("{} is neither a file nor a directory", source.display());
        }
    }
    Ok(())
}
