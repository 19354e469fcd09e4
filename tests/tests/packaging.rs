//! The systemd units of `deploy/packaging/` (issue 21, item 4) pass
//! `systemd-analyze verify` with no warning, pointed at the binaries just
//! built (verify checks that ExecStart is an executable); the container
//! files name a toolchain that can build the locked dependencies, and their
//! build context leaves `target/` out. (The images themselves are built by
//! `deploy/packaging/build-images.sh`, which takes too long for the suite.)

use std::time::Duration;

use anyhow::Result;
use pgrollout_tests::{run_command, stack::repo_root, Binaries, TestDir};

#[tokio::test]
async fn the_systemd_units_verify_cleanly() -> Result<()> {
    let bins = Binaries::locate()?;
    let dir = TestDir::new("packaging")?;
    let packaging = repo_root().join("deploy/packaging");
    let mut units = Vec::new();
    for (unit, installed, built) in [
        (
            "pgrollout-controller.service",
            "/usr/local/bin/pgrollout ",
            &bins.controller,
        ),
        (
            "pgrollout-agent.service",
            "/usr/local/bin/pgrollout-agent ",
            &bins.agent,
        ),
    ] {
        let text = std::fs::read_to_string(packaging.join(unit))?;
        assert!(text.contains(installed), "{unit} runs {installed}");
        let path = dir.path().join(unit);
        std::fs::write(
            &path,
            text.replace(installed, &format!("{} ", built.display())),
        )?;
        units.push(path.to_string_lossy().into_owned());
    }
    let mut args = vec!["verify".to_owned()];
    args.extend(units);
    let out = run_command("systemd-analyze", &args, &[], Duration::from_secs(60)).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stderr.trim(), "", "no warning: {out}");
    Ok(())
}

/// A toolchain image older than a locked dependency's `rust-version` fails at
/// `cargo build --locked` — the container files once named rust 1.85 while
/// tonic, config and time needed 1.88, and so did the workspace's own
/// `rust-version`. `cargo metadata` reads each package's declared minimum.
#[tokio::test]
async fn the_container_toolchain_covers_every_locked_dependency() -> Result<()> {
    let root = repo_root();
    let out = run_command(
        env!("CARGO"),
        [
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--manifest-path",
            &root.join("Cargo.toml").to_string_lossy(),
        ],
        &[],
        Duration::from_secs(120),
    )
    .await?;
    assert_eq!(out.code, 0, "{out}");
    let metadata: serde_json::Value = serde_json::from_str(&out.stdout)?;
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    let needed = packages
        .iter()
        .filter_map(|p| Some((version(p["rust_version"].as_str()?), p["name"].as_str()?)))
        .max()
        .expect("the locked packages declare rust-version");
    for package in packages.iter().filter(|p| {
        p["name"]
            .as_str()
            .is_some_and(|name| name.starts_with("pgrollout-"))
    }) {
        let declared = version(package["rust_version"].as_str().unwrap_or("0"));
        assert!(
            declared >= needed.0,
            "{} declares rust-version {declared:?}, but {} needs {:?}",
            package["name"],
            needed.1,
            needed.0
        );
    }
    for file in ["Containerfile.controller", "Containerfile.agent"] {
        let text = std::fs::read_to_string(root.join("deploy/packaging").join(file))?;
        let image = text
            .lines()
            .find_map(|l| l.strip_prefix("ARG RUST_IMAGE="))
            .unwrap_or_else(|| panic!("{file} has no ARG RUST_IMAGE="));
        // docker.io/library/rust:1.95-bookworm → 1.95
        let tag = image
            .rsplit_once("rust:")
            .map_or(image, |(_, tag)| tag)
            .trim_end_matches("-bookworm");
        assert!(
            version(tag) >= needed.0,
            "{file} builds with {image}, but {} needs rust {:?}",
            needed.1,
            needed.0
        );
    }
    let ignored = std::fs::read_to_string(root.join(".dockerignore"))?;
    assert!(
        ignored.lines().any(|l| l.trim() == "target"),
        "the build context must leave target/ out:\n{ignored}"
    );
    Ok(())
}

/// `1.88` or `1.88.0` as comparable numbers.
fn version(text: &str) -> Vec<u32> {
    let mut parts: Vec<u32> = text.split('.').map(|p| p.parse().unwrap_or(0)).collect();
    parts.resize(3, 0);
    parts
}
