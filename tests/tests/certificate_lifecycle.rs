//! Certificates that stop being good while the controller runs (issue 13):
//! a revocation list with a malformed entry still revokes every well-formed
//! one at once, and a certificate that passes its notAfter ends its link.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgrollout_tests::stack::{StackOptions, TRUST_DOMAIN};
use pgrollout_tests::Stack;

const WAIT: Duration = Duration::from_secs(30);

/// The certificate's serial as `openssl x509 -serial` prints it, written
/// the way people paste it: upper-case pairs separated by colons.
fn colon_serial(certificate: &std::path::Path) -> Result<String> {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(certificate)
        .output()
        .context("running openssl")?;
    anyhow::ensure!(out.status.success(), "openssl x509 failed");
    let text = String::from_utf8(out.stdout)?;
    let hex = text
        .trim()
        .strip_prefix("serial=")
        .context("openssl's serial line")?;
    let pairs: Vec<String> = hex
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).into_owned())
        .collect();
    Ok(pairs.join(":"))
}

#[tokio::test]
async fn a_malformed_revocation_is_reported_and_the_well_formed_ones_apply_at_once() -> Result<()> {
    let mut stack = Stack::start(&["dev"]).await?;
    assert_eq!(stack.cli_as("looker", &["agents"]).await?.code, 0);
    let agent_serial = colon_serial(&stack.ca_dir.join("agent-dev-dev-1.pem"))?;
    let config_path = stack.controller_config_path();
    let config = std::fs::read_to_string(&config_path)?;
    std::fs::write(
        &config_path,
        format!(
            "{config}[security]\nrevoked = [\n  \"serial:GG:01:not-hex\",\n  \"serial:{agent_serial}\",\n  \
             \"spiffe://{TRUST_DOMAIN}/operator/looker\",\n]\n"
        ),
    )?;
    // The agent, revoked by its serial in openssl's colon form, is cut off
    // within the reload…
    let agent = stack
        .zones
        .get_mut("dev")
        .and_then(|z| z.agent.as_mut())
        .context("agent")?;
    agent.wait_for_line("was revoked", WAIT).await?;
    assert_eq!(agent.wait_for_exit(WAIT).await?.code(), Some(2));
    // …the malformed entry is reported loudly…
    stack
        .controller
        .wait_for_line("MALFORMED REVOCATION", WAIT)
        .await?;
    // …and the revoked operator is refused.
    let refused = stack.cli_as("looker", &["agents"]).await?;
    assert_eq!(refused.code, 1, "{refused}");
    assert!(refused.stderr.contains("is revoked"), "{refused}");
    assert_eq!(stack.cli(&["agents"]).await?.code, 0, "others unaffected");

    let audit = stack.audit_lines()?;
    assert!(
        audit.iter().any(
            |l| l.starts_with("config.revocation_malformed|failed|controller|")
                && l.contains("serial:GG:01:not-hex")
                && l.contains("2 well-formed revocation(s) apply")
        ),
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
async fn an_agent_whose_certificate_expires_is_disconnected_at_not_after_and_offered_nothing(
) -> Result<()> {
    let mut stack = Stack::start_with(StackOptions {
        start_agents: false,
        ..StackOptions::default()
    })
    .await?;
    let validity = Duration::from_secs(30);
    let prefix = stack.ca_dir.join("short-lived-dev-1");
    let ca = stack.ca_dir.to_string_lossy().to_string();
    let prefix_text = prefix.to_string_lossy().to_string();
    let issued = Instant::now();
    let out = stack
        .bins
        .run_cli(
            [
                "ca",
                "issue",
                "agent",
                "--dir",
                &ca,
                "--zone",
                "dev",
                "--name",
                "dev-1",
                "--validity",
                &format!("{}s", validity.as_secs()),
                "--out",
                &prefix_text,
            ],
            &[],
        )
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let agent_config = stack.zone("dev").agent_config.clone();
    let text = std::fs::read_to_string(&agent_config)?;
    let long_lived = stack.ca_dir.join("agent-dev-dev-1");
    let text = text.replace(&long_lived.to_string_lossy().to_string(), &prefix_text);
    std::fs::write(&agent_config, text)?;
    stack.start_agent("dev").await?;
    let agents = stack.cli(&["agents"]).await?;
    assert!(agents.stdout.contains("dev-1"), "{agents}");

    // The controller ends the link at notAfter: awaited, not slept for.
    stack
        .controller
        .wait_for_line("expired at", validity + WAIT)
        .await?;
    let after = issued.elapsed();
    assert!(
        after + Duration::from_secs(2) >= validity,
        "disconnected after {after:?}, before the certificate's {validity:?} were up"
    );

    let deploy = stack
        .cli(&["deploy", "reconcilemupstream", "dev", "--agent-wait", "2s"])
        .await?;
    assert_eq!(deploy.code, 2, "{deploy}");
    assert!(
        deploy.stderr.contains("no agent connected for zone dev"),
        "{deploy}"
    );
    let client = stack.zone("dev").pg.connect().await?;
    let created: bool = client
        .query_one(
            "SELECT to_regprocedure('public.reconcilemupstream(text)') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    assert!(!created, "nothing ran in dev");
    let audit = stack.audit_lines()?;
    assert!(
        audit
            .iter()
            .any(|l| l.starts_with("agent.expired|disconnected|agent dev/dev-1|")),
        "{audit:#?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_operator_stream_ends_when_the_operators_certificate_expires() -> Result<()> {
    let stack = Stack::start_with(StackOptions {
        environment_extra: vec![("dev".into(), "require_approval = true".into())],
        ..StackOptions::default()
    })
    .await?;
    let parked = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(parked.code, 5, "parked for approval: {parked}");
    let request = parked.request_id()?;

    // approver-1 (a viewer too) follows the request with a certificate that
    // expires in a few seconds; nobody approves, so only expiry can end it.
    let validity = Duration::from_secs(20);
    let ca = stack.ca_dir.to_string_lossy().to_string();
    let issued = Instant::now();
    let out = stack
        .bins
        .run_cli(
            [
                "ca",
                "issue",
                "operator",
                "--dir",
                &ca,
                "--name",
                "approver-1",
                "--validity",
                &format!("{}s", validity.as_secs()),
            ],
            &[],
        )
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let file = |suffix: &str| {
        stack
            .ca_dir
            .join(format!("operator-approver-1.{suffix}"))
            .to_string_lossy()
            .to_string()
    };
    let ca_pem = stack.ca_dir.join("ca.pem").to_string_lossy().to_string();
    let (cert, key) = (file("pem"), file("key"));
    let mut follow = pgrollout_tests::Process::spawn(
        &stack.bins.controller,
        ["status", &request, "--follow"],
        &[
            ("PGROLLOUT_ADDR", &stack.operators),
            ("PGROLLOUT_CA", &ca_pem),
            ("PGROLLOUT_CERT", &cert),
            ("PGROLLOUT_KEY", &key),
        ],
        "follow-until-expiry",
    )?;
    let status = follow.wait_for_exit(validity + WAIT).await?;
    let after = issued.elapsed();
    assert!(
        after + Duration::from_secs(2) >= validity,
        "the stream ended after {after:?}, before the certificate's {validity:?} were up: {}",
        follow.output_so_far()
    );
    assert_ne!(
        status.code(),
        Some(0),
        "an expired operator's stream is cut: {}",
        follow.output_so_far()
    );
    // Nothing ran meanwhile.
    let client = stack.zone("dev").pg.connect().await?;
    let created: bool = client
        .query_one(
            "SELECT to_regprocedure('public.reconcilemupstream(text)') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    assert!(!created);
    Ok(())
}
