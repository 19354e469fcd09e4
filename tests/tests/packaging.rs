//! The systemd units of `deploy/packaging/` (issue 21, item 4) pass
//! `systemd-analyze verify` with no warning, pointed at the binaries just
//! built (verify checks that ExecStart is an executable).

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
