//! What a script driving the CLI relies on (issue 16): bad filters are
//! refused with the valid values, listings say only what is true.

use anyhow::{Context, Result};
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
