//! The audit log: what happened is recorded, readable with `pgrollout audit`,
//! and `audit verify` proves nobody edited or deleted an entry.

use anyhow::Result;
use pgrollout_tests::Stack;

#[tokio::test]
async fn the_audit_log_records_rollouts_and_detects_an_edited_or_deleted_entry() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let deploy = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(deploy.code, 0, "{deploy}");
    assert_eq!(
        stack
            .cli_as("looker", &["deploy", "addarc", "dev"])
            .await?
            .code,
        1
    );

    let out = stack
        .cli(&["audit", "--procedure", "reconcilemupstream"])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "the gates' verdict, the deploy, the agent's result: {out}"
    );
    assert!(lines[2].contains("job.finished"), "{out}");
    assert!(lines[0].contains("gates.passed"), "{out}");
    let gates_line = lines[0];
    let lines = &lines[1..];
    assert!(lines[0].contains("test-operator"), "{out}");
    assert!(lines[0].contains("deploy.started"), "{out}");
    assert!(
        lines[0].contains("env=dev procedure=reconcilemupstream"),
        "{out}"
    );
    let trace = deploy
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Trace ID: "))
        .unwrap_or_default();
    assert!(lines[0].contains(&format!("trace={trace}")), "{out}");
    assert!(
        lines[1].contains(&format!("trace={trace}")),
        "the result carries the rollout's trace: {out}"
    );
    assert!(
        gates_line.contains(&format!("trace={trace}")),
        "the gates' verdict carries the rollout's trace: {out}"
    );

    let json = stack.cli(&["audit", "--output", "json"]).await?;
    assert_eq!(json.code, 0, "{json}");
    let entries: serde_json::Value = serde_json::from_str(&json.stdout)?;
    let actions: Vec<&str> = entries
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    for expected in [
        "agent.connected",
        "deploy.started",
        "job.finished",
        "auth.denied",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }

    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_eq!(verify.code, 0, "{verify}");
    assert!(verify.stdout.starts_with("audit log intact: "), "{verify}");

    // Someone with write access to the store edits an entry.
    let store = rusqlite::Connection::open(stack.dir.path().join("controller.sqlite"))?;
    store.execute(
        "UPDATE audit_log SET actor = 'someone-else' WHERE action = 'deploy.started'",
        [],
    )?;
    let seq: i64 = store.query_row(
        "SELECT seq FROM audit_log WHERE action = 'deploy.started'",
        [],
        |r| r.get(0),
    )?;
    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_eq!(verify.code, 1, "{verify}");
    assert!(
        verify.stdout.contains(&format!(
            "audit log BROKEN at entry {seq}: entry {seq} was changed after it was written"
        )),
        "{verify}"
    );

    // …or deletes one (the edited one is put back first).
    store.execute(
        "UPDATE audit_log SET actor = 'test-operator' WHERE action = 'deploy.started'",
        [],
    )?;
    assert_eq!(stack.cli(&["audit", "verify"]).await?.code, 0);
    store.execute("DELETE FROM audit_log WHERE seq = ?1", [seq])?;
    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_eq!(verify.code, 1, "{verify}");
    assert!(
        verify
            .stdout
            .contains(&format!("audit log BROKEN at entry {}", seq + 1)),
        "{verify}"
    );
    assert!(verify.stdout.contains("missing"), "{verify}");
    Ok(())
}
