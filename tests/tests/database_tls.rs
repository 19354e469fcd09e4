//! The agent's connections to its databases over TLS (`sslmode` on a target): against a cluster that accepts
//! TLS connections only, so a deploy that gets through has proved it used TLS; and the clear failures an
//! operator sees when the certificate cannot be trusted or the server has no TLS at all.
//!
//! Certificates are made with the `openssl` command-line tool.

use std::time::Duration;

use anyhow::{Context, Result};
use pgrollout_tests::{CommandOutput, OpensslCa, Stack, StackOptions};

#[tokio::test]
async fn verify_full_with_the_ca_of_the_server_deploys_over_tls() -> Result<()> {
    let (mut stack, database_ca) = stack_with_a_tls_only_database("IP:127.0.0.1").await?;
    assert!(
        stack.zone("dev").pg.connect().await.is_err(),
        "the cluster must refuse plaintext, or this test proves nothing"
    );
    set_target_tls(
        &stack,
        &format!(
            "sslmode = \"verify-full\"\nsslrootcert = \"{}\"",
            database_ca.certificate.display()
        ),
    )?;
    stack.start_agent("dev").await?;

    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("Status: [ok] SUCCESS"), "{out}");
    // Read back through psql, which encrypts too (sslmode prefer).
    let ledger = stack
        .zone("dev")
        .pg
        .execute_sql("select 'ledger rows: ' || count(*) from pgrollout.ledger")
        .await?;
    assert!(ledger.contains("ledger rows: 1"), "{ledger}");
    Ok(())
}

#[tokio::test]
async fn verify_full_with_another_ca_fails_clearly_and_a_corrected_ca_file_is_used_without_restart(
) -> Result<()> {
    let (mut stack, database_ca) = stack_with_a_tls_only_database("IP:127.0.0.1").await?;
    let other_ca = OpensslCa::create(stack.dir.path(), "other").await?;
    // The file the agent is told to trust, holding the wrong CA for now.
    let trusted = stack.dir.path().join("trusted-ca.pem");
    std::fs::copy(&other_ca.certificate, &trusted)?;
    set_target_tls(
        &stack,
        &format!(
            "sslmode = \"verify-full\"\nsslrootcert = \"{}\"",
            trusted.display()
        ),
    )?;
    stack.start_agent("dev").await?;

    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stdout.contains("[FAIL] connect"), "{out}");
    let port = stack.zone("dev").pg.port();
    let expected = format!(
        "cannot connect to target main (postgres@127.0.0.1:{port}/pgrollout_dev): TLS handshake failed: \
         invalid peer certificate: UnknownIssuer (the server's certificate is not signed by a CA in sslrootcert {})",
        trusted.display()
    );
    assert!(
        out.stderr.contains(&expected),
        "expected {expected:?} in:\n{out}"
    );
    assert_no_password(&stack, &out);

    // The CA file is read on every connect: replacing it is enough.
    std::fs::copy(&database_ca.certificate, &trusted)?;
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    Ok(())
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_for_another_host_which_require_accepts() -> Result<()> {
    let (mut stack, database_ca) = stack_with_a_tls_only_database("DNS:db.example").await?;
    set_target_tls(
        &stack,
        &format!(
            "sslmode = \"verify-full\"\nsslrootcert = \"{}\"",
            database_ca.certificate.display()
        ),
    )?;
    stack.start_agent("dev").await?;

    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 2, "{out}");
    let expected = "TLS handshake failed: invalid peer certificate: certificate not valid for name \"127.0.0.1\"; \
                    certificate is only valid for DnsName(\"db.example\") \
                    (the server's certificate must name host \"127.0.0.1\" in its subjectAltName)";
    assert!(
        out.stderr.contains(expected),
        "expected {expected:?} in:\n{out}"
    );

    // The same server with require: encrypted, the certificate not checked.
    let running = stack
        .zones
        .get_mut("dev")
        .and_then(|zone| zone.agent.take());
    if let Some(mut agent) = running {
        agent.terminate_and_wait().await?;
    }
    let config = std::fs::read_to_string(&stack.zone("dev").agent_config)?;
    let (without_tls, _) = config
        .split_once("sslmode")
        .context("the TLS keys were appended last")?;
    std::fs::write(&stack.zone("dev").agent_config, without_tls)?;
    set_target_tls(&stack, "sslmode = \"require\"")?;
    stack.start_agent("dev").await?;
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    Ok(())
}

#[tokio::test]
async fn require_encrypts_without_a_ca_file() -> Result<()> {
    let (mut stack, _database_ca) = stack_with_a_tls_only_database("IP:127.0.0.1").await?;
    set_target_tls(&stack, "sslmode = \"require\"")?;
    stack.start_agent("dev").await?;

    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    Ok(())
}

#[tokio::test]
async fn verify_ca_checks_the_chain_but_not_the_host_name() -> Result<()> {
    // The certificate names another host: verify-full refuses it (above),
    // verify-ca accepts it because the database's CA signed it.
    let (mut stack, database_ca) = stack_with_a_tls_only_database("DNS:db.example").await?;
    let other_ca = OpensslCa::create(stack.dir.path(), "other").await?;
    set_target_tls(
        &stack,
        &format!(
            "sslmode = \"verify-ca\"\nsslrootcert = \"{}\"",
            database_ca.certificate.display()
        ),
    )?;
    stack.start_agent("dev").await?;
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");

    // The chain is still checked: another CA is refused.
    let running = stack
        .zones
        .get_mut("dev")
        .and_then(|zone| zone.agent.take());
    if let Some(mut agent) = running {
        agent.terminate_and_wait().await?;
    }
    let config = std::fs::read_to_string(&stack.zone("dev").agent_config)?;
    let (without_tls, _) = config
        .split_once("sslmode")
        .context("the TLS keys were appended last")?;
    std::fs::write(&stack.zone("dev").agent_config, without_tls)?;
    set_target_tls(
        &stack,
        &format!(
            "sslmode = \"verify-ca\"\nsslrootcert = \"{}\"",
            other_ca.certificate.display()
        ),
    )?;
    stack.start_agent("dev").await?;
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("UnknownIssuer"), "{out}");
    Ok(())
}

#[tokio::test]
async fn prefer_is_the_default_and_encrypts_when_the_server_offers_tls() -> Result<()> {
    // No sslmode at all: libpq's `prefer`. The cluster refuses plaintext,
    // so a deploy that gets through used TLS.
    let (mut stack, _database_ca) = stack_with_a_tls_only_database("IP:127.0.0.1").await?;
    stack.start_agent("dev").await?;
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    Ok(())
}

#[tokio::test]
async fn pgsslmode_applies_to_a_target_without_sslmode() -> Result<()> {
    // Against a cluster that refuses plaintext: without PGSSLMODE the default
    // (`prefer`) deploys; PGSSLMODE=disable makes the same agent fail to
    // connect, which proves the variable is read; `sslmode` in the file wins.
    let (stack, _database_ca) = stack_with_a_tls_only_database("IP:127.0.0.1").await?;
    let zone = stack.zone("dev");
    let password = zone.pg.password();
    let deploy_with = |pgsslmode: Option<&'static str>, name: &'static str| {
        let stack = &stack;
        async move {
            let mut env = vec![(pgrollout_tests::stack::PASSWORD_ENV, password)];
            env.extend(pgsslmode.map(|mode| ("PGSSLMODE", mode)));
            let mut agent = pgrollout_tests::Process::spawn(
                &stack.bins.agent,
                [
                    "--config",
                    &stack.zone("dev").agent_config.to_string_lossy(),
                ],
                &env,
                name,
            )?;
            agent
                .wait_for_line("connected to controller", Duration::from_secs(20))
                .await?;
            let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await;
            // Gone before the next one starts: a dying agent still holds the
            // zone's journal, and the next would refuse to share it.
            agent.kill_9()?;
            agent.wait_for_exit(Duration::from_secs(20)).await?;
            out
        }
    };
    let out = deploy_with(None, "agent-dev").await?;
    assert_eq!(out.code, 0, "{out}");
    let out = deploy_with(Some("disable"), "agent-dev-2").await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("cannot connect to target main"),
        "{out}"
    );
    set_target_tls(&stack, "sslmode = \"require\"")?;
    let out = deploy_with(Some("disable"), "agent-dev-3").await?;
    assert_eq!(out.code, 0, "{out}");
    Ok(())
}

#[tokio::test]
async fn require_against_a_server_without_tls_fails_clearly() -> Result<()> {
    let mut stack = Stack::start_with(StackOptions {
        start_agents: false,
        ..StackOptions::default()
    })
    .await?;
    set_target_tls(&stack, "sslmode = \"require\"")?;
    stack.start_agent("dev").await?;

    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("cannot connect to target main"),
        "{out}"
    );
    assert!(out.stderr.contains("server does not support TLS"), "{out}");
    assert_no_password(&stack, &out);
    Ok(())
}

/// A stack (agent not started) whose dev cluster (on 127.0.0.1) accepts TLS connections only, with a
/// certificate for `subject_alt_name` (e.g. `IP:127.0.0.1`) signed by the returned CA.
async fn stack_with_a_tls_only_database(subject_alt_name: &str) -> Result<(Stack, OpensslCa)> {
    let stack = Stack::start_with(StackOptions {
        start_agents: false,
        ..StackOptions::default()
    })
    .await?;
    let database_ca = OpensslCa::create(stack.dir.path(), "database").await?;
    let (certificate, key) = database_ca
        .issue_server_certificate(subject_alt_name)
        .await?;
    let (certificate, key) = (
        std::fs::read_to_string(certificate)?,
        std::fs::read_to_string(key)?,
    );
    stack.zone("dev").pg.require_tls(&certificate, &key).await?;
    Ok((stack, database_ca))
}

/// Adds TLS keys to the dev agent's target; `[[targets]]` is the last table of the config the stack wrote.
fn set_target_tls(stack: &Stack, keys: &str) -> Result<()> {
    let path = &stack.zone("dev").agent_config;
    let mut config = std::fs::read_to_string(path)?;
    config.push_str(keys);
    config.push('\n');
    std::fs::write(path, config).with_context(|| format!("writing {}", path.display()))
}

fn assert_no_password(stack: &Stack, out: &CommandOutput) {
    let password = stack.zone("dev").pg.password();
    assert!(!out.stdout.contains(password) && !out.stderr.contains(password));
    assert!(!stack.all_process_output().contains(password));
}
