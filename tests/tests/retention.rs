//! Retention (issue 17 item 3): `[store.retention]` prunes the step events
//! and job results of rollouts that finished long ago — here after a second,
//! checked every second — with the real binaries over mutual TLS. What an
//! operator checks afterwards: `status` and `log` of a pruned rollout say when
//! it was pruned (never an error or an empty report), the result a promotion
//! gate reads is kept, the audit chain still verifies whole (pruning is itself
//! audited), `history` still reads the zone's ledger, and a rollback still
//! finds a pruned rollout's version in the controller's version index.

use std::time::Duration;

use anyhow::{Context, Result};
use pgrollout_tests::{Stack, StackOptions};

/// The rollout id a deploy or rollback printed (`Rollout: r-…`).
fn rollout_id(stdout: &str) -> Result<String> {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("Rollout: "))
        .map(|id| id.trim().to_owned())
        .with_context(|| format!("no rollout id in {stdout}"))
}

/// Every file under `dir`, its folders left in place.
fn remove_files(dir: &std::path::Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            remove_files(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn pruned_rollouts_say_so_and_the_audit_chain_and_rollback_sources_survive() -> Result<()> {
    let stack = Stack::start_with(StackOptions {
        controller_extra: "[store.retention]\nkeep = \"1s\"\nevery = \"1s\"\n".into(),
        ..StackOptions::default()
    })
    .await?;
    let path = stack.project.join("procedures/reconcilemupstream.sql");
    let v1 = std::fs::read_to_string(&path)?;
    let v2 = v1.replacen("BEGIN\n", "BEGIN\n  -- v2\n", 1);

    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let deployed_v1 = rollout_id(&out.stdout)?;
    stack.write_procedure("reconcilemupstream.sql", &v2)?;
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let out = stack
        .cli(&["rollback", "reconcilemupstream", "dev"])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let rolled_back = rollout_id(&out.stdout)?;

    // Each run of the task logs what it pruned; wait for the runs until both
    // rollouts are pruned (the mark comes first, so no run is missed).
    let pruned = |text: &str| text.contains("\nPruned: ");
    loop {
        let mark = stack.controller.mark();
        let (first, last) = (
            stack.cli(&["status", &deployed_v1]).await?,
            stack.cli(&["status", &rolled_back]).await?,
        );
        assert_eq!((first.code, last.code), (0, 0), "{first}\n{last}");
        if pruned(&first.stdout) && pruned(&last.stdout) {
            // A rollback's result: nothing reads it any more.
            assert!(
                last.stdout
                    .contains("step events and job result removed by the store's retention"),
                "{last}"
            );
            // The newest successful deploy of its plan in dev: the promotion
            // and tests-passed gates read its result, so it stays.
            assert!(
                first
                    .stdout
                    .contains("(the result is kept: a promotion gate reads it)"),
                "{first}"
            );
            break;
        }
        stack
            .controller
            .wait_for_line_after(
                mark,
                "retention: pruned old rollouts",
                Duration::from_secs(30),
            )
            .await?;
    }

    let log = stack.cli(&["log", &rolled_back]).await?;
    assert_eq!(log.code, 0, "{log}");
    assert!(log.stdout.contains("DEPLOYMENT LOG"), "{log}");
    assert!(log.stdout.contains("\nPruned: "), "{log}");

    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_eq!(verify.code, 0, "{verify}");
    assert!(verify.stdout.contains("audit log intact"), "{verify}");
    assert!(
        stack
            .audit_lines()?
            .iter()
            .any(|line| line.starts_with("store.pruned|ok|controller|")),
        "pruning is audited"
    );

    // The ledger is the zone's: retention never touches it.
    let history = stack.cli(&["history", "reconcilemupstream", "dev"]).await?;
    assert_eq!(history.code, 0, "{history}");
    assert!(
        history.stdout.matches("reconcilemupstream").count() >= 3,
        "{history}"
    );

    // v2 again, then its rollback with every backup gone: v1 comes from the
    // controller's version index, though the rollout that deployed it was
    // pruned.
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    remove_files(&stack.zone("dev").backup_dir)?;
    let out = stack
        .cli(&["rollback", "reconcilemupstream", "dev"])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("[restored from controller plan "),
        "{out}"
    );
    Ok(())
}
