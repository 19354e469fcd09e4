//! Environment gates: configured as data, enforced by the controller before
//! any agent sees the job, visible to the operator with their reasons.

use anyhow::Result;
use pgrollout_tests::{Stack, StackOptions};

fn three_environments(qa: &str, prod: &str) -> StackOptions {
    StackOptions {
        zones: vec!["dev".into(), "qa".into(), "prod".into()],
        environment_extra: vec![
            ("qa".into(), format!("promote_from = \"dev\"\n{qa}")),
            ("prod".into(), format!("promote_from = \"qa\"\n{prod}")),
        ],
        ..StackOptions::default()
    }
}

#[tokio::test]
async fn prod_refuses_a_plan_that_never_succeeded_in_qa_and_accepts_it_after() -> Result<()> {
    let stack = Stack::start_with(three_environments(
        "gates = [\"syntax\", \"tests_passed\", \"backup_created\"]",
        "gates = [\"syntax\", \"tests_passed\", \"change_ticket\", \"runbook\", \"rollback_plan\", \"backup_verified\"]",
    ))
    .await?;

    // Straight to prod: refused, exit 1, every failed gate named.
    let out = stack.cli(&["deploy", "reconcilemupstream", "prod"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("gate promoted_from refused: plan "),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("never succeeded in qa; deploy exactly this plan there first"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("gate change_ticket refused: no change ticket attached; pass --ticket"),
        "{out}"
    );
    let prod = stack.zone("prod").pg.connect().await?;
    let exists = "SELECT to_regprocedure('public.reconcilemupstream(text)') IS NOT NULL";
    assert!(
        !prod.query_one(exists, &[]).await?.get::<_, bool>(0),
        "nothing reached prod"
    );

    // QA before DEV: refused the same way.
    let out = stack.cli(&["deploy", "reconcilemupstream", "qa"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("never succeeded in dev"), "{out}");

    // The plan shows what each environment still needs.
    let plan = stack.cli(&["plan", "reconcilemupstream"]).await?;
    assert_eq!(plan.code, 0, "{plan}");
    assert!(plan.stdout.contains("dev: ready"), "{plan}");
    assert!(plan.stdout.contains("qa: blocked"), "{plan}");

    // DEV, then QA, then PROD with its attachments.
    assert_eq!(
        stack
            .cli(&["deploy", "reconcilemupstream", "dev"])
            .await?
            .code,
        0
    );
    let qa = stack.cli(&["deploy", "reconcilemupstream", "qa"]).await?;
    assert_eq!(qa.code, 0, "{qa}");
    assert!(qa.stdout.contains("gate [ok] tests_passed: plan "), "{qa}");
    assert!(
        qa.stdout
            .contains("passed its smoke tests in dev: rollout r-"),
        "{qa}"
    );
    let out = stack
        .cli(&[
            "deploy",
            "reconcilemupstream",
            "prod",
            "--ticket",
            "CHG-1042",
            "--runbook",
            "https://wiki/runbooks/lineage",
            "--rollback-plan",
            "pgrollout rollback reconcilemupstream prod",
        ])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .contains("gate [ok] change_ticket: change ticket attached: CHG-1042"),
        "{out}"
    );
    assert!(prod.query_one(exists, &[]).await?.get::<_, bool>(0));

    // A changed plan is a new plan: it must go through QA again.
    let path = stack.project.join("procedures/reconcilemupstream.sql");
    std::fs::write(
        &path,
        std::fs::read_to_string(&path)?.replace("BEGIN\n", "BEGIN\n  -- v2\n"),
    )?;
    let out = stack
        .cli(&[
            "deploy",
            "reconcilemupstream",
            "prod",
            "--ticket",
            "CHG-1043",
            "--runbook",
            "r",
            "--rollback-plan",
            "p",
        ])
        .await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("never succeeded in qa"), "{out}");
    Ok(())
}

#[tokio::test]
async fn a_closed_maintenance_window_with_no_wait_and_a_missing_watch_refuse() -> Result<()> {
    // A window of one minute, 12 hours from now: certainly closed.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let minute = ((now / 60) + 12 * 60) % (24 * 60);
    let window = format!(
        "{:02}:{:02}-{:02}:{:02} UTC",
        minute / 60,
        minute % 60,
        (minute + 1) / 60 % 24,
        (minute + 1) % 60
    );
    let stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into()],
        environment_extra: vec![(
            "dev".into(),
            format!("maintenance_window = \"{window}\"\nrequire_approval = true\ngates = [\"monitoring\"]"),
        )],
        ..StackOptions::default()
    })
    .await?;
    // --no-wait: a closed window refuses instead of scheduling (the
    // scheduling itself is tests/tests/schedule.rs).
    let out = stack
        .cli(&["deploy", "reconcilemupstream", "dev", "--no-wait"])
        .await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "gate maintenance_window refused: outside {window}; it next opens at "
        )),
        "{out}"
    );
    assert!(
        out.stderr.contains(
            "gate monitoring refused: no live post-deploy watch for public.reconcilemupstream in dev"
        ),
        "{out}"
    );
    let audit = stack.cli(&["audit", "--output", "json"]).await?;
    assert!(audit.stdout.contains("gates.refused"), "{audit}");
    Ok(())
}

#[tokio::test]
async fn approvals_are_bound_to_the_plan_never_by_the_requester_and_start_the_rollout() -> Result<()>
{
    let stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into(), "qa".into()],
        environment_extra: vec![(
            "qa".into(),
            "promote_from = \"dev\"\nrequire_approval = true\napprovals = 2\ngates = [\"stakeholder_signoff\"]".into(),
        )],
        ..StackOptions::default()
    })
    .await?;
    assert_eq!(
        stack
            .cli(&["deploy", "reconcilemupstream", "dev"])
            .await?
            .code,
        0
    );

    let out = stack.cli(&["deploy", "reconcilemupstream", "qa"]).await?;
    assert_eq!(out.code, 5, "parked, nothing changed yet: {out}");
    assert!(
        out.stderr
            .contains("awaits approval and changed nothing yet"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("gate approval: needs 2 approval(s) by the approver role, has 0"),
        "{out}"
    );
    let request = out.request_id()?;
    let qa = stack.zone("qa").pg.connect().await?;
    let exists = "SELECT to_regprocedure('public.reconcilemupstream(text)') IS NOT NULL";
    assert!(!qa.query_one(exists, &[]).await?.get::<_, bool>(0));

    // The requester cannot approve, a viewer cannot, a deployer without the role cannot.
    let own = stack.cli(&["approve", &request]).await?;
    assert_eq!(own.code, 1, "{own}");
    assert!(own.stderr.contains("lacks the approver role"), "{own}");
    let viewer = stack.cli_as("looker", &["approve", &request]).await?;
    assert_eq!(viewer.code, 1, "{viewer}");

    let first = stack
        .cli_as("approver-1", &["approve", &request, "--reason", "reviewed"])
        .await?;
    assert_eq!(first.code, 0, "{first}");
    assert!(first.stdout.contains("still waits"), "{first}");
    assert!(first.stdout.contains("has 1 (approver-1)"), "{first}");
    // Approving twice does not count twice.
    let again = stack.cli_as("approver-1", &["approve", &request]).await?;
    assert_eq!(again.code, 0, "{again}");
    assert!(again.stdout.contains("already approved"), "{again}");
    assert!(again.stdout.contains("nothing changed"), "{again}");
    let second = stack.cli_as("approver-2", &["approve", &request]).await?;
    assert!(
        second
            .stdout
            .contains("gate stakeholder_signoff: needs a sign-off"),
        "{second}"
    );
    assert!(
        !qa.query_one(exists, &[]).await?.get::<_, bool>(0),
        "still waiting for the sign-off"
    );

    // The last decision starts the rollout; --follow stays with it to the end.
    let signed = stack
        .cli_as(
            "signer",
            &["approve", &request, "--as", "stakeholder", "--follow"],
        )
        .await?;
    assert_eq!(signed.code, 0, "{signed}");
    assert!(
        signed
            .stdout
            .contains(&format!("request {request} approved; rollout r-")),
        "{signed}"
    );
    assert!(signed.stdout.contains("RESULT: [ok] PASS"), "{signed}");
    // Every role includes viewing, so the stakeholder reads the whole log.
    assert!(signed.stdout.contains("Status: [ok] SUCCESS"), "{signed}");
    let rollout = signed
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Rollout: "))
        .unwrap_or_default()
        .to_owned();
    let status = stack.cli(&["status", &rollout]).await?;
    assert_eq!(
        status
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("State: ")),
        Some("succeeded"),
        "{status}"
    );
    let status = stack.cli(&["status", &rollout]).await?;
    for expected in [
        "Gate [ok] approval: approved by approver-1, approver-2",
        "Gate [ok] stakeholder_signoff: signed off by signer",
        "Gate [ok] promoted_from: plan ",
    ] {
        assert!(
            status.stdout.contains(expected),
            "missing {expected:?} in:\n{status}"
        );
    }
    assert!(
        qa.query_one(exists, &[]).await?.get::<_, bool>(0),
        "approved and deployed"
    );
    let repeat = stack.cli_as("approver-1", &["approve", &request]).await?;
    assert_eq!(repeat.code, 1, "{repeat}");
    assert!(repeat.stderr.contains("is already approved"), "{repeat}");

    // A rejection closes a request for good.
    let path = stack.project.join("procedures/reconcilemupstream.sql");
    std::fs::write(
        &path,
        std::fs::read_to_string(&path)?.replace("BEGIN\n", "BEGIN\n  -- v2\n"),
    )?;
    assert_eq!(
        stack
            .cli(&["deploy", "reconcilemupstream", "dev"])
            .await?
            .code,
        0
    );
    let out = stack.cli(&["deploy", "reconcilemupstream", "qa"]).await?;
    let second_request = out.request_id()?;
    assert_ne!(
        second_request, request,
        "a changed plan is a new request: earlier approvals do not carry over"
    );
    assert!(out.stderr.contains("has 0"), "{out}");
    let rejected = stack
        .cli_as(
            "approver-2",
            &["reject", &second_request, "--reason", "not in this sprint"],
        )
        .await?;
    assert_eq!(rejected.code, 0, "{rejected}");
    assert!(
        rejected
            .stdout
            .contains("rejected by approver-2: not in this sprint"),
        "{rejected}"
    );
    let late = stack
        .cli_as("approver-1", &["approve", &second_request])
        .await?;
    assert!(late.stderr.contains("is already rejected"), "{late}");

    // An approver who requested a rollout cannot approve it.
    let own = stack
        .cli_as("approver-1", &["deploy", "reconcilemupstream", "qa"])
        .await?;
    let own_request = own.request_id()?;
    let refused = stack
        .cli_as("approver-1", &["approve", &own_request])
        .await?;
    assert_eq!(refused.code, 1, "{refused}");
    assert!(
        refused.stderr.contains(&format!(
            "operator approver-1 requested {own_request} and cannot approve it"
        )),
        "{refused}"
    );
    Ok(())
}
