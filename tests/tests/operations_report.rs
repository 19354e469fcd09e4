//! What `rollouts` and the audit log say about plan-less operations (issue
//! 16, item 7): a rollback counts the routines it restored (not "0"), its
//! audit entries name the operation and the changes it undid, and
//! `history` — a read — is not listed as a rollout.

use anyhow::Result;
use pgrollout_tests::Stack;

#[tokio::test]
async fn a_rollback_counts_its_routines_and_history_is_not_a_rollout() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let deploy = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(deploy.code, 0, "{deploy}");
    let rollback = stack
        .cli(&["rollback", "reconcilemupstream", "dev"])
        .await?;
    assert_eq!(rollback.code, 0, "{rollback}");
    let history = stack.cli(&["history", "reconcilemupstream", "dev"]).await?;
    assert_eq!(history.code, 0, "{history}");

    let listed = stack.cli(&["rollouts"]).await?;
    assert_eq!(listed.code, 0, "{listed}");
    // KIND ENV STATE PROCEDURE ROUTINES follow the rollout id and its time.
    let rows: Vec<Vec<&str>> = listed
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let kind = words
                .iter()
                .position(|w| ["deploy", "rollback", "history"].contains(w))?;
            Some(words[kind..].to_vec())
        })
        .collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(kinds, ["rollback", "deploy"], "{listed}");
    assert_eq!(
        rows[0].get(4),
        Some(&"1"),
        "the rollback restored one routine: {listed}"
    );
    assert_eq!(rows[1].get(2), Some(&"rolled_back"), "{listed}");

    let audit = stack.audit_lines()?;
    let started = audit
        .iter()
        .find(|l| l.starts_with("rollback.started|"))
        .cloned()
        .unwrap_or_default();
    assert!(
        started.contains("rollback of reconcilemupstream to zone dev")
            && !started.contains("0 routine(s)"),
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l.starts_with("rollout.rolled_back|") && l.contains("all 1 change(s) undone")),
        "{audit:#?}"
    );
    assert!(
        !audit.iter().any(|l| l.contains("0 change(s)")),
        "{audit:#?}"
    );
    Ok(())
}
