//! The agent follows libpq's passfile conventions (issue 21, item 6): with
//! no password source configured it reads `PGPASSFILE` (else `~/.pgpass`),
//! and refuses a passfile others can read, as libpq does.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::{Context, Result};
use pgrollout_tests::{Process, Stack};

#[tokio::test]
async fn pgpassfile_is_read_when_no_source_is_configured_and_refused_when_others_can_read_it(
) -> Result<()> {
    let mut stack = Stack::start(&["dev"]).await?;
    stack.kill_agent("dev").await?;
    let zone = stack.zone("dev");
    let config = std::fs::read_to_string(&zone.agent_config)?;
    let without_source: String = config
        .lines()
        .filter(|line| !line.starts_with("password_env"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&zone.agent_config, without_source)?;
    let pg = &zone.pg;
    let passfile = stack.dir.path().join("pgpass");
    std::fs::write(
        &passfile,
        format!(
            "{}:{}:*:{}:{}\n",
            pg.host(),
            pg.port(),
            pg.superuser(),
            pg.password()
        ),
    )?;
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o644))?;
    let agent = Process::spawn(
        &stack.bins.agent,
        ["--config", &zone.agent_config.to_string_lossy()],
        &[("PGPASSFILE", passfile.to_str().context("utf-8 path")?)],
        "agent-dev",
    )?;
    agent
        .wait_for_line("connected to controller", Duration::from_secs(20))
        .await?;

    let refused = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(refused.code, 2, "{refused}");
    let expected = format!(
        "passfile {} of target main has group or world access (mode 0644)",
        passfile.display()
    );
    assert!(refused.stderr.contains(&expected), "{refused}");
    assert!(refused.stderr.contains("chmod 0600"), "{refused}");
    assert!(!refused.stderr.contains(pg.password()), "{refused}");

    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600))?;
    let deployed = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(deployed.code, 0, "{deployed}");
    let rows: i64 = pg
        .connect()
        .await?
        .query_one(
            "SELECT count(*) FROM pgrollout.ledger WHERE identity LIKE 'public.reconcilemupstream(%'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(
        rows, 1,
        "the deploy with the passfile's password is recorded"
    );
    drop(agent);
    Ok(())
}
