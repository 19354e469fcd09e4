//! Email notifications (issue 21, item 5) against a real SMTP server:
//! aiosmtpd (`email_support/smtp_server.py`) with STARTTLS and a login, with
//! implicit TLS, and answering "try later" — around real deploys with the
//! real binaries. The servers' certificates come from a CA made with the
//! `openssl` CLI, given to the channels as `smtp_ca_file`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgrollout_tests::stack::{repo_root, OPERATOR};
use pgrollout_tests::{free_port, run_command, OpensslCa, Process, Stack, StackOptions};
use serde_json::Value;

/// How long a message may take to arrive once its rollout ended.
const DELIVERY: Duration = Duration::from_secs(20);
const PASSWORD: &str = "smtp-Pa55-w0rd-7c1e";

/// The Python with aiosmtpd: Debian's (`python3-aiosmtpd`) first, since a
/// `python3` earlier on PATH (pyenv, a venv) may not see Debian's modules.
async fn python_with_aiosmtpd() -> Result<String> {
    for python in ["/usr/bin/python3", "python3"] {
        let check = run_command(
            python,
            ["-c", "import aiosmtpd"],
            &[],
            Duration::from_secs(30),
        )
        .await;
        if check.is_ok_and(|out| out.code == 0) {
            return Ok(python.to_owned());
        }
    }
    anyhow::bail!("no python3 with aiosmtpd: run deploy/install-prerequisites.sh (apt-get install python3-aiosmtpd)")
}

/// One running SMTP server.
struct SmtpServer {
    process: Process,
    port: u16,
}

impl SmtpServer {
    async fn start(
        name: &str,
        certificate: &(PathBuf, PathBuf),
        extra: &[&str],
    ) -> Result<SmtpServer> {
        let python = python_with_aiosmtpd().await?;
        let script = repo_root().join("tests/tests/email_support/smtp_server.py");
        let port = free_port();
        let mut args = vec![
            script.to_string_lossy().into_owned(),
            "--port".into(),
            port.to_string(),
            "--cert".into(),
            certificate.0.to_string_lossy().into_owned(),
            "--key".into(),
            certificate.1.to_string_lossy().into_owned(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let process = Process::spawn(&python, &args, &[], name)?;
        process
            .wait_for_line("READY", Duration::from_secs(30))
            .await?;
        Ok(SmtpServer { process, port })
    }

    /// The next message received after `after` lines, as JSON.
    async fn message_after(&self, mark: pgrollout_tests::OutputMark) -> Result<Value> {
        let line = self
            .process
            .wait_for_line_after(mark, "MESSAGE ", DELIVERY)
            .await?;
        let json = line
            .split_once("MESSAGE ")
            .map(|(_, json)| json)
            .unwrap_or_default();
        serde_json::from_str(json).with_context(|| format!("not JSON: {line}"))
    }
}

fn version(name: &str, body: &str) -> String {
    format!("CREATE OR REPLACE FUNCTION public.{name}(n integer) RETURNS integer LANGUAGE sql AS '{body}';\n")
}

#[tokio::test]
async fn deploys_are_mailed_over_tls_and_a_refusing_server_is_audited_without_touching_the_deploy(
) -> Result<()> {
    let certs = tempfile::tempdir()?;
    let ca = OpensslCa::create(certs.path(), "smtp").await?;
    let server_cert = ca.issue_server_certificate("DNS:localhost").await?;
    let password_file = certs.path().join("smtp.password");
    std::fs::write(&password_file, format!("{PASSWORD}\n"))?;
    let wrong_password_file = certs.path().join("wrong.password");
    std::fs::write(&wrong_password_file, "not-the-password\n")?;

    let password_arg = password_file.to_string_lossy().into_owned();
    let relay = SmtpServer::start(
        "smtp-starttls",
        &server_cert,
        &["--login", "pgrollout", "--password-file", &password_arg],
    )
    .await?;
    let implicit = SmtpServer::start("smtp-implicit", &server_cert, &["--implicit-tls"]).await?;
    let busy = SmtpServer::start(
        "smtp-busy",
        &server_cert,
        &["--reply", "451 4.3.2 mailbox busy, try later"],
    )
    .await?;

    let ca_file = ca.certificate.display();
    let channel = |port: u16, tls: &str, login: Option<&Path>| {
        let login = login
            .map(|file| {
                format!(
                    "smtp_username = \"pgrollout\"\nsmtp_password_file = \"{}\"\n",
                    file.display()
                )
            })
            .unwrap_or_default();
        format!(
            "kind = \"email\"\nsmtp_host = \"localhost\"\nsmtp_port = {port}\nsmtp_tls = \"{tls}\"\n\
             smtp_ca_file = \"{ca_file}\"\n{login}from = \"pgrollout <pgrollout@db.example>\"\n\
             to = [\"dba@db.example\", \"Ops Team <ops@db.example>\"]\n"
        )
    };
    let stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into(), "qa".into()],
        controller_extra: format!(
            "[notifications]\ntimeout = \"5s\"\nbackoff = \"100ms\"\nattempts = 2\n\
             [notifications.channels.dba-mail]\n{}\
             [notifications.channels.ops-mail]\n{}\
             [notifications.channels.busy-mail]\n{}\
             [notifications.channels.wrong-login]\n{}\
             [notifications.routes]\ndev = [\"dba-mail\", \"ops-mail\"]\nqa = [\"busy-mail\", \"wrong-login\"]\n",
            channel(relay.port, "starttls", Some(&password_file)),
            channel(implicit.port, "tls", None),
            channel(busy.port, "starttls", None),
            channel(relay.port, "starttls", Some(&wrong_password_file)),
        ),
        ..StackOptions::default()
    })
    .await?;
    stack.write_procedure("mail_n.sql", &version("mail_n", "SELECT n + 1"))?;

    let (relay_mark, implicit_mark) = (relay.process.mark(), implicit.process.mark());
    let deploy = stack.cli(&["deploy", "mail_n", "dev"]).await?;
    assert_eq!(deploy.code, 0, "{deploy}");
    let deployed = deploy.rollout_id()?;
    let message = relay.message_after(relay_mark).await?;
    assert_eq!(message["tls"], true, "STARTTLS before anything: {message}");
    assert_eq!(message["login"], "pgrollout", "{message}");
    assert_eq!(message["mail_from"], "pgrollout@db.example");
    assert_eq!(
        message["rcpt_tos"],
        serde_json::json!(["dba@db.example", "ops@db.example"])
    );
    assert_eq!(message["from"], "pgrollout <pgrollout@db.example>");
    assert_eq!(message["to"], "dba@db.example, Ops Team <ops@db.example>");
    assert_eq!(
        message["subject"],
        "[pgrollout] DEV deploy.succeeded: mail_n"
    );
    assert_eq!(message["content_type"], "text/plain");
    let body = message["body"]
        .as_str()
        .unwrap_or_default()
        .replace("\r\n", "\n");
    assert!(
        body.starts_with(&format!(
            "✅ Deployed mail_n to DEV (by {OPERATOR}, rollout {deployed})\n\n"
        )),
        "{body}"
    );
    for line in [
        "Event        deploy.succeeded\n".to_owned(),
        "Status       succeeded\n".to_owned(),
        "Environment  dev\n".to_owned(),
        format!("Rollout      {deployed}\n"),
        "Exit code    0\n".to_owned(),
    ] {
        assert!(body.contains(&line), "{line:?} in:\n{body}");
    }
    let event_id = body
        .lines()
        .find_map(|l| l.strip_prefix("Event id"))
        .map(str::trim)
        .context("an event id line")?;
    assert_eq!(message["message_id"], format!("<{event_id}@pgrollout>"));
    let over_implicit_tls = implicit.message_after(implicit_mark).await?;
    assert_eq!(over_implicit_tls["tls"], true, "{over_implicit_tls}");
    assert_eq!(over_implicit_tls["subject"], message["subject"]);
    assert_eq!(over_implicit_tls["login"], Value::Null);

    // QA's servers refuse: "try later" is retried, a wrong login is not;
    // the deploy succeeds all the same and both failures are audited.
    let busy_mark = busy.process.mark();
    let started = Instant::now();
    let deploy = stack.cli(&["deploy", "mail_n", "qa"]).await?;
    assert_eq!(deploy.code, 0, "{deploy}");
    assert!(deploy.stdout.contains("Status: [ok] SUCCESS"), "{deploy}");
    let qa_rollout = deploy.rollout_id()?;
    busy.process
        .wait_for_line_after(busy_mark, "REFUSED", DELIVERY)
        .await?;
    let second = busy.process.mark();
    busy.process
        .wait_for_line_after(second, "REFUSED", DELIVERY)
        .await?;
    // Audited by the controller, another process: nothing to await from
    // here but the audit log itself.
    let mut failures = loop {
        let failures: Vec<String> = stack
            .audit_entries()
            .await?
            .into_iter()
            .filter(|e| {
                e["action"] == "notification.failed" && e["rollout_id"] == qa_rollout.as_str()
            })
            .filter_map(|e| e["details"].as_str().map(str::to_owned))
            .collect();
        if failures.len() >= 2 || started.elapsed() > DELIVERY {
            break failures;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    failures.sort();
    assert_eq!(
        failures,
        [
            "channel busy-mail (email): event deploy.succeeded: 2 attempt(s) failed; last: SMTP delivery failed: \
             transient error (451): 4.3.2 mailbox busy, try later",
            "channel wrong-login (email): event deploy.succeeded: 1 attempt(s) failed; last: SMTP delivery failed: \
             permanent error (535): 5.7.8 Authentication credentials invalid",
        ],
        "a 4xx is retried, a refused login is not"
    );
    let everything = serde_json::to_string(&stack.audit_entries().await?)?;
    assert!(
        !everything.contains(PASSWORD) && !everything.contains("not-the-password"),
        "no password in the audit log"
    );
    let output = stack.all_process_output();
    assert!(
        !output.contains(PASSWORD) && !output.contains("not-the-password"),
        "no password in any log"
    );
    Ok(())
}
