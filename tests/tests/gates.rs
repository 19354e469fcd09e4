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
    assert!(qa.stdout.contains("gate ✅ tests_passed: plan "), "{qa}");
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
            .contains("gate ✅ change_ticket: change ticket attached: CHG-1042"),
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
async fn a_closed_maintenance_window_and_unavailable_gates_fail_closed() -> Result<()> {
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
            format!("maintenance_window = \"{window}\"\nrequire_approval = true"),
        )],
        ..StackOptions::default()
    })
    .await?;
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "gate maintenance_window refused: outside {window}; it next opens at "
        )),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("gate approval refused: approval is not available in this version"),
        "{out}"
    );
    let audit = stack.cli(&["audit", "--output", "json"]).await?;
    assert!(audit.stdout.contains("gates.refused"), "{audit}");
    Ok(())
}
