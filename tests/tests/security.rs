//! Zones you can trust: mutual TLS everywhere, the zone taken from the
//! certificate, operator roles, revocation, limits — and a database password
//! that appears nowhere outside its zone.

use std::time::Duration;

use anyhow::{Context, Result};
use pgrollout_tests::stack::{OPERATOR, TRUST_DOMAIN};
use pgrollout_tests::{Stack, StackOptions, TestDir};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn clients_without_a_certificate_or_from_another_ca_are_refused_clearly() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let ca = stack.ca_dir.join("ca.pem").to_string_lossy().to_string();

    // No certificate at all: the CLI says what is missing and how to get it.
    let out = stack
        .bins
        .run_cli(
            ["agents"],
            &[("PGROLLOUT_ADDR", &stack.operators), ("PGROLLOUT_CA", &ca)],
        )
        .await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("no operator certificate"), "{out}");
    assert!(out.stderr.contains("pgrollout ca issue operator"), "{out}");

    // A certificate from another CA: refused during the handshake, and the
    // CLI explains it instead of printing a transport error.
    let other = TestDir::new("other-ca")?;
    let other_dir = other.path().join("ca").to_string_lossy().to_string();
    for args in [
        vec![
            "ca",
            "init",
            "--dir",
            &other_dir,
            "--trust-domain",
            TRUST_DOMAIN,
        ],
        vec![
            "ca", "issue", "operator", "--dir", &other_dir, "--name", OPERATOR,
        ],
    ] {
        let out = stack.bins.run_cli(args, &[]).await?;
        assert_eq!(out.code, 0, "{out}");
    }
    let cert = format!("{other_dir}/operator-{OPERATOR}.pem");
    let key = format!("{other_dir}/operator-{OPERATOR}.key");
    let out = stack
        .bins
        .run_cli(
            ["agents"],
            &[
                ("PGROLLOUT_ADDR", &stack.operators),
                ("PGROLLOUT_CA", &ca),
                ("PGROLLOUT_CERT", &cert),
                ("PGROLLOUT_KEY", &key),
            ],
        )
        .await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("was not issued by the CA in"), "{out}");
    assert!(out.stderr.contains("pgrollout ca issue operator"), "{out}");
    assert!(
        !out.stderr.to_lowercase().contains("transport error"),
        "{out}"
    );

    // An agent with a certificate from the other CA: the controller refuses
    // the handshake itself, and says so in its log.
    let out = stack
        .bins
        .run_cli(
            [
                "ca", "issue", "agent", "--dir", &other_dir, "--zone", "dev", "--name", "rogue",
            ],
            &[],
        )
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let zone = stack.zone("dev");
    let rogue_config = stack.dir.path().join("rogue.toml");
    std::fs::write(
        &rogue_config,
        std::fs::read_to_string(&zone.agent_config)?
            .replace(
                &format!("{}/agent-dev-dev-1", stack.ca_dir.display()),
                &format!("{other_dir}/agent-dev-rogue"),
            )
            .replace("name = \"dev-1\"", "name = \"rogue\"")
            // Its own journal: the real agent holds the lock on dev-1's.
            .replace(
                "backup_dir = ",
                &format!(
                    "state_dir = \"{}\"\nbackup_dir = ",
                    stack.dir.path().join("rogue-state").display()
                ),
            ),
    )?;
    let rogue = pgrollout_tests::Process::spawn(
        &stack.bins.agent,
        ["--config", &rogue_config.to_string_lossy()],
        &[(pgrollout_tests::stack::PASSWORD_ENV, zone.pg.password())],
        "rogue",
    )?;
    stack
        .controller
        .wait_for_line("TLS handshake refused", WAIT)
        .await?;
    rogue.wait_for_line("link to controller lost", WAIT).await?;

    // The rightful operator gets through.
    let out = stack.cli(&["agents"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("dev        dev-1"), "{out}");
    assert!(!out.stdout.contains("rogue"), "{out}");
    Ok(())
}

#[tokio::test]
async fn an_agent_claiming_another_zone_is_rejected_audited_and_never_gets_its_jobs() -> Result<()>
{
    let mut stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into(), "prod".into()],
        start_agents: false,
        ..StackOptions::default()
    })
    .await?;
    // The prod agent's config, but the dev agent's certificate: a dev host
    // that says it is prod.
    let prod = stack.zone("prod");
    let config = std::fs::read_to_string(&prod.agent_config)?
        .replace("agent-prod-prod-1", "agent-dev-dev-1");
    std::fs::write(&prod.agent_config, config)?;
    let password = stack.zone("prod").pg.password().to_owned();
    let mut impostor = pgrollout_tests::Process::spawn(
        &stack.bins.agent,
        [
            "--config",
            &stack.zone("prod").agent_config.to_string_lossy(),
        ],
        &[(pgrollout_tests::stack::PASSWORD_ENV, &password)],
        "impostor",
    )?;
    impostor
        .wait_for_line(
            "binds this agent to zone dev, but its Hello claims zone prod",
            WAIT,
        )
        .await?;
    let status = impostor.wait_for_exit(WAIT).await?;
    assert_eq!(
        status.code(),
        Some(2),
        "a zone mismatch is final, not retried"
    );

    let out = stack
        .cli(&["deploy", "reconcilemupstream", "prod", "--agent-wait", "1s"])
        .await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("no agent connected for zone prod"),
        "{out}"
    );
    let client = stack.zone("prod").pg.connect().await?;
    let created: bool = client
        .query_one(
            "SELECT to_regprocedure('public.reconcilemupstream(text)') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    assert!(!created);

    let audit = stack.audit_lines()?;
    assert!(
        audit
            .iter()
            .any(|l| l.starts_with("agent.rejected|refused|agent dev/dev-1|")
                && l.contains("binds this agent to zone dev")),
        "{audit:#?}"
    );
    // The real dev agent is welcome in dev.
    stack.start_agent("dev").await?;
    assert_eq!(
        stack
            .cli(&["deploy", "reconcilemupstream", "dev"])
            .await?
            .code,
        0
    );
    Ok(())
}

#[tokio::test]
async fn a_revoked_agent_is_disconnected_within_seconds_and_cannot_reconnect() -> Result<()> {
    let mut stack = Stack::start(&["dev"]).await?;
    let config_path = stack.dir.path().join("controller.toml");
    let config = std::fs::read_to_string(&config_path)?;
    std::fs::write(
        &config_path,
        format!(
            "{config}[security]\nrevoked = [\"spiffe://{TRUST_DOMAIN}/zone/dev/agent/dev-1\"]\n"
        ),
    )?;
    let started = std::time::Instant::now();
    let agent = stack
        .zones
        .get_mut("dev")
        .and_then(|z| z.agent.as_mut())
        .context("agent")?;
    agent.wait_for_line("was revoked", WAIT).await?;
    let status = agent.wait_for_exit(WAIT).await?;
    eprintln!(
        "revoked agent gone {:?} after the config changed",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(2), "revocation is final");

    // It cannot come back.
    let password = stack.zone("dev").pg.password().to_owned();
    let mut again = pgrollout_tests::Process::spawn(
        &stack.bins.agent,
        [
            "--config",
            &stack.zone("dev").agent_config.to_string_lossy(),
        ],
        &[(pgrollout_tests::stack::PASSWORD_ENV, &password)],
        "agent-again",
    )?;
    again.wait_for_line("is revoked", WAIT).await?;
    assert_eq!(again.wait_for_exit(WAIT).await?.code(), Some(2));

    let audit = stack.audit_lines()?;
    assert!(
        audit.iter().any(|l| l.starts_with("config.reloaded|ok|")),
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l.starts_with("agent.revoked|disconnected|agent dev/dev-1|")),
        "{audit:#?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_operator_without_the_deployer_role_cannot_deploy() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let out = stack
        .cli_as("looker", &["deploy", "reconcilemupstream", "dev"])
        .await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("operator looker lacks the deployer role required to deploy"),
        "{out}"
    );
    // A viewer may still look.
    assert_eq!(stack.cli_as("looker", &["agents"]).await?.code, 0);
    // An operator the config does not know has no role at all.
    let out = stack.cli_as("stranger", &["agents"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("lacks the viewer role"), "{out}");

    let client = stack.zone("dev").pg.connect().await?;
    let created: bool = client
        .query_one(
            "SELECT to_regprocedure('public.reconcilemupstream(text)') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    assert!(!created);
    let audit = stack.audit_lines()?;
    assert!(
        audit
            .iter()
            .any(|l| l.starts_with("auth.denied|refused|operator looker|deploy:")),
        "{audit:#?}"
    );
    Ok(())
}

#[tokio::test]
async fn over_limit_plans_are_refused_before_anything_changes() -> Result<()> {
    let stack = Stack::start_with(StackOptions {
        controller_extra: "[limits]\nmax_routines_per_plan = 1\nmax_message_bytes = 65536\n".into(),
        ..StackOptions::default()
    })
    .await?;
    let out = stack.cli(&["deploy", "addarc", "dev"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("the plan has 2 routines, over this controller's limit of 1"),
        "{out}"
    );

    // A routine whose plan is larger than the controller accepts.
    let padding = "-- padding\n".repeat(8_000);
    stack.write_procedure(
        "big.sql",
        &format!("CREATE FUNCTION public.big() RETURNS integer LANGUAGE plpgsql AS $$\nBEGIN\n{padding}RETURN 1;\nEND\n$$;\n"),
    )?;
    let out = stack.cli(&["deploy", "big", "dev"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("message"), "{out}");

    // A file over the loader's limit is refused by the CLI itself.
    let huge = "-- padding\n".repeat(200_000);
    stack.write_procedure(
        "huge.sql",
        &format!(
            "CREATE FUNCTION public.huge() RETURNS integer LANGUAGE sql AS 'select 1';\n{huge}"
        ),
    )?;
    let out = stack.cli(&["deploy", "huge", "dev"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("procedures/huge.sql"), "{out}");
    assert!(out.stderr.contains("limit"), "{out}");

    let client = stack.zone("dev").pg.connect().await?;
    let created: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_proc WHERE proname IN ('addarc', 'big', 'huge')",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(created, 0);
    Ok(())
}

#[tokio::test]
async fn the_database_password_appears_nowhere_outside_the_zone() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let password = stack.zone("dev").pg.password().to_owned();
    let mut seen = String::new();
    for args in [
        vec!["deploy", "reconcilemupstream", "dev"],
        vec!["deploy", "addarc", "dev"],
        vec!["smoke", "addarc", "dev"],
        vec!["agents"],
    ] {
        let out = stack.cli(&args).await?;
        assert_eq!(out.code, 0, "{out}");
        seen.push_str(&out.to_string());
    }
    // A failing connection too: its error message must not carry it either.
    stack.zone("dev").pg.stop().await?;
    let out = stack.cli(&["deploy", "removearc", "dev"]).await?;
    assert_eq!(out.code, 2, "{out}");
    seen.push_str(&out.to_string());
    stack.zone("dev").pg.restart().await?;

    seen.push_str(&stack.all_process_output());
    seen.push_str(&stack.audit_lines()?.join("\n"));
    let store = rusqlite::Connection::open(stack.dir.path().join("controller.sqlite"))?;
    for table in ["rollouts", "jobs", "job_events", "plans"] {
        let mut statement = store.prepare(&format!("SELECT * FROM {table}"))?;
        let columns = statement.column_count();
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            for index in 0..columns {
                match row.get_ref(index)? {
                    rusqlite::types::ValueRef::Text(text)
                    | rusqlite::types::ValueRef::Blob(text) => {
                        seen.push_str(&String::from_utf8_lossy(text))
                    }
                    _ => {}
                }
            }
        }
    }
    let client = stack.zone("dev").pg.connect().await?;
    for row in client
        .query("SELECT row_to_json(l)::text FROM pgrollout.ledger l", &[])
        .await?
    {
        seen.push_str(row.get::<_, &str>(0));
    }
    for entry in std::fs::read_dir(stack.zone("dev").backup_dir.join("main"))? {
        seen.push_str(&std::fs::read_to_string(entry?.path())?);
    }
    assert!(
        seen.len() > 10_000,
        "the search covered real output ({} bytes)",
        seen.len()
    );
    assert!(!seen.contains(&password), "the password leaked");
    Ok(())
}
