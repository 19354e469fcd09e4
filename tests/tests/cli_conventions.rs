//! What a script driving the CLI relies on (issue 16): bad filters are
//! refused with the valid values, listings say only what is true.

use anyhow::{Context, Result};
use pgrollout_tests::stack::OPERATOR;
use pgrollout_tests::{window_from_now, Stack, StackOptions};

#[tokio::test]
async fn an_unknown_state_filter_is_refused_and_names_the_valid_states() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;

    let out = stack.cli(&["rollouts", "--state", "bogus"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("--state \"bogus\" is not a state"),
        "{out}"
    );
    for state in ["succeeded", "rolled_back", "awaiting_approval", "cancelled"] {
        assert!(out.stderr.contains(state), "{state} not named:\n{out}");
    }
    assert!(!out.stdout.contains("no rollouts"), "{out}");

    // A real state still filters, and an empty store still says so.
    let out = stack.cli(&["rollouts", "--state", "succeeded"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("no rollouts"), "{out}");
    Ok(())
}

#[tokio::test]
async fn a_cancelled_request_is_not_listed_as_running_at_a_time() -> Result<()> {
    let closed = window_from_now(12 * 60, 1)?;
    let stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into()],
        environment_extra: vec![("dev".into(), format!("maintenance_window = \"{closed}\""))],
        ..StackOptions::default()
    })
    .await?;
    let scheduled = stack.cli(&["deploy", "addarc", "dev"]).await?;
    assert_eq!(scheduled.code, 0, "{scheduled}");
    let id = scheduled.request_id()?;
    let cancelled = stack.cli(&["cancel", &id, "--reason", "freeze"]).await?;
    assert_eq!(cancelled.code, 0, "{cancelled}");

    let listed = stack.cli(&["rollouts"]).await?;
    assert_eq!(listed.code, 0, "{listed}");
    let row = listed
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .with_context(|| format!("{id} not listed:\n{listed}"))?;
    assert!(row.contains(" cancelled "), "{row}");
    assert!(
        !row.contains("runs at"),
        "a cancelled request runs never: {row}"
    );
    Ok(())
}

#[tokio::test]
async fn a_refused_self_approval_is_audited_and_a_repeated_approval_changes_nothing() -> Result<()>
{
    let stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into()],
        environment_extra: vec![(
            "dev".into(),
            "require_approval = true\napprovals = 2".into(),
        )],
        ..StackOptions::default()
    })
    .await?;
    // approver-1 holds the deployer role too, so it can request, and must
    // not approve its own request.
    let parked = stack
        .cli_as("approver-1", &["deploy", "addarc", "dev"])
        .await?;
    assert_eq!(parked.code, 5, "{parked}");
    let id = parked.request_id()?;

    let own = stack.cli_as("approver-1", &["approve", &id]).await?;
    assert_eq!(own.code, 1, "{own}");
    assert!(own.stderr.contains("cannot approve it"), "{own}");

    let first = stack.cli_as("approver-2", &["approve", &id]).await?;
    assert_eq!(first.code, 0, "{first}");
    assert!(first.stdout.contains("approval recorded"), "{first}");
    let again = stack.cli_as("approver-2", &["approve", &id]).await?;
    assert_eq!(again.code, 0, "{again}");
    assert!(
        again.stdout.contains(&format!(
            "approver-2 already approved request {id} as approver; nothing changed"
        )),
        "{again}"
    );
    assert!(!again.stdout.contains("approval recorded"), "{again}");

    let audit = stack.audit_lines()?;
    let refused: Vec<_> = audit
        .iter()
        .filter(|l| l.starts_with("approval.refused|refused|approver-1"))
        .collect();
    assert_eq!(refused.len(), 1, "{audit:#?}");
    let granted = audit
        .iter()
        .filter(|l| l.starts_with("approval.granted|"))
        .count();
    assert_eq!(granted, 1, "one approval, one entry: {audit:#?}");
    Ok(())
}

#[tokio::test]
async fn every_role_includes_viewing_and_no_role_includes_nothing() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    // approver-2 holds only `approver`, signer only `stakeholder`.
    for operator in ["approver-2", "signer"] {
        for command in [&["agents"][..], &["rollouts"][..]] {
            let out = stack.cli_as(operator, command).await?;
            assert_eq!(out.code, 0, "{operator} {command:?}: {out}");
        }
        // Viewing is all the extra it gets.
        let out = stack
            .cli_as(operator, &["deploy", "reconcilemupstream", "dev"])
            .await?;
        assert_eq!(out.code, 1, "{out}");
        assert!(out.stderr.contains("lacks the deployer role"), "{out}");
    }
    let out = stack.cli_as("stranger", &["rollouts"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("lacks the viewer role"), "{out}");
    Ok(())
}

#[tokio::test]
async fn completions_and_man_pages_come_from_the_cli_definition() -> Result<()> {
    let bins = pgrollout_tests::Binaries::locate()?;
    let bash = bins.run_cli(["completions", "bash"], &[]).await?;
    assert_eq!(bash.code, 0, "{bash}");
    for word in ["deploy", "rollback", "--emergency", "completions"] {
        assert!(bash.stdout.contains(word), "{word} not completed");
    }
    // The script is valid bash.
    let dir = pgrollout_tests::TestDir::new("shell-docs")?;
    let script = dir.path().join("pgrollout.bash");
    std::fs::write(&script, &bash.stdout)?;
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()?;
    assert!(syntax.status.success(), "{syntax:?}");
    for shell in ["zsh", "fish"] {
        let out = bins.run_cli(["completions", shell], &[]).await?;
        assert_eq!(out.code, 0, "{out}");
        assert!(out.stdout.contains("rollback"), "{shell}: {out}");
    }
    let out = bins.run_cli(["completions", "tcsh"], &[]).await?;
    assert_eq!(out.code, 1, "an unknown shell is bad input: {out}");

    let man = dir.path().join("man1");
    let out = bins
        .run_cli(["man", "--dir", &man.to_string_lossy()], &[])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    for page in [
        "pgrollout.1",
        "pgrollout-deploy.1",
        "pgrollout-alert-create.1",
    ] {
        let text = std::fs::read_to_string(man.join(page)).with_context(|| page.to_owned())?;
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
    let deploy = std::fs::read_to_string(man.join("pgrollout-deploy.1"))?;
    assert!(deploy.contains("no\\-wait"), "{deploy}");
    Ok(())
}

#[tokio::test]
async fn a_reader_that_stops_early_ends_the_output_quietly() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let ca = &stack.ca_dir;
    let env = [
        ("PGROLLOUT_ADDR", stack.operators.clone()),
        ("PGROLLOUT_CA", ca.join("ca.pem").to_string_lossy().into()),
        (
            "PGROLLOUT_CERT",
            ca.join(format!("operator-{OPERATOR}.pem"))
                .to_string_lossy()
                .into(),
        ),
        (
            "PGROLLOUT_KEY",
            ca.join(format!("operator-{OPERATOR}.key"))
                .to_string_lossy()
                .into(),
        ),
    ];
    for command in ["audit", "rollouts", "completions bash"] {
        // Like `pgrollout audit | head -0`: the reading end is closed before
        // the command writes its first line, so every write fails with EPIPE.
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        let out = tokio::process::Command::new(&stack.bins.controller)
            .args(command.split(' '))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::process::Stdio::from(writer))
            .stderr(std::process::Stdio::piped())
            // Not `output()`: tokio's replaces the stdout set above with a pipe.
            .spawn()?
            .wait_with_output()
            .await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{command}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{command}: {stderr}");
    }
    Ok(())
}

/// The README and every command's help (all of it is in the man pages) speak
/// in the repository's own words: no reference to a document a user of the
/// repository does not have, such as the team's original requirements file.
#[tokio::test]
async fn the_readme_and_the_help_name_no_document_outside_the_repository() -> Result<()> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))?;
    for (line, text) in readme.lines().enumerate() {
        assert!(!text.contains("SEED"), "README.md:{}: {text}", line + 1);
    }
    let bins = pgrollout_tests::Binaries::locate()?;
    let dir = pgrollout_tests::TestDir::new("help-words")?;
    let man = dir.path().join("man1");
    let out = bins
        .run_cli(["man", "--dir", &man.to_string_lossy()], &[])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let mut pages = 0;
    for entry in std::fs::read_dir(&man)? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        assert!(!text.contains("SEED"), "{}: {text}", path.display());
        pages += 1;
    }
    assert!(pages > 20, "only {pages} man page(s)");
    Ok(())
}
