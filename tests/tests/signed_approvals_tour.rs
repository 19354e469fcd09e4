//! Issue 19 through the real controller and CLI: a prod deploy that needs two
//! approvals is signed by its requester at `deploy` and by each approver at
//! `approve`; the controller keeps and forwards the statements, and the prod
//! agent, with an `[approvals]` policy, verifies them and runs it. When the
//! controller's store loses a statement, the agent refuses, nothing changes,
//! and the refusal is in the controller's audit log. Prod has the syntax gate:
//! its dry run (a check job) carries the deploy's statements too. Rollbacks, disable and
//! enable are signed by the CLI too: the requester's statement for each, an
//! admin's with its reason for an emergency rollback.

use anyhow::Result;
use pgrollout_tests::stack::{Stack, StackOptions};

async fn prod_with_policy() -> Result<Stack> {
    let mut stack = Stack::start_with(StackOptions {
        zones: vec!["prod".into()],
        start_agents: false,
        environment_extra: vec![(
            "prod".into(),
            "require_approval = true\napprovals = 2\ngates = [\"syntax\"]".into(),
        )],
        ..StackOptions::default()
    })
    .await?;
    let config_path = stack.zone("prod").agent_config.clone();
    let config = std::fs::read_to_string(&config_path)?;
    std::fs::write(
        &config_path,
        format!(
            "{config}\n[approvals]\noperator_ca = \"{}\"\nenvironment = \"prod\"\n\
             approvers = [\"approver-1\", \"approver-2\"]\nadmins = [\"approver-1\"]\nrequired_approvers = 2\n",
            stack.ca_dir.join("ca.pem").display()
        ),
    )?;
    stack.start_agent("prod").await?;
    Ok(stack)
}

async fn deployed(stack: &Stack) -> Result<bool> {
    let client = stack.zone("prod").pg.connect().await?;
    Ok(client
        .query_one(
            "SELECT to_regclass('pgrollout.ledger') IS NOT NULL \
             AND EXISTS (SELECT FROM pg_proc WHERE proname = 'reconcilemupstream')",
            &[],
        )
        .await?
        .get(0))
}

#[tokio::test]
async fn a_prod_deploy_runs_once_its_requester_and_two_approvers_signed() -> Result<()> {
    let stack = prod_with_policy().await?;
    let parked = stack.cli(&["deploy", "reconcilemupstream", "prod"]).await?;
    assert_eq!(parked.code, 5, "{parked}");
    let id = parked.request_id()?;
    let first = stack.cli_as("approver-1", &["approve", &id]).await?;
    assert_eq!(first.code, 0, "{first}");
    assert!(first.stderr.contains("signed: plan"), "{first}");
    let second = stack
        .cli_as("approver-2", &["approve", &id, "--follow"])
        .await?;
    assert_eq!(second.code, 0, "{second}");
    assert!(deployed(&stack).await?, "reconcilemupstream deployed");
    let agent_log = stack.all_process_output();
    assert!(
        agent_log.contains("requested by test-operator and approved by approver-1, approver-2"),
        "{agent_log}"
    );
    Ok(())
}

#[tokio::test]
async fn a_statement_lost_by_the_controller_store_is_refused_by_the_agent_and_audited() -> Result<()>
{
    let stack = prod_with_policy().await?;
    let parked = stack.cli(&["deploy", "reconcilemupstream", "prod"]).await?;
    assert_eq!(parked.code, 5, "{parked}");
    let id = parked.request_id()?;
    let first = stack.cli_as("approver-1", &["approve", &id]).await?;
    assert_eq!(first.code, 0, "{first}");
    // Whoever holds the store strips the requester's statement.
    let store = rusqlite::Connection::open(stack.dir.path().join("controller.sqlite"))?;
    let stripped = store.execute(
        "DELETE FROM signed_statements WHERE request_id = ?1 AND seq = 1",
        [&id],
    )?;
    assert_eq!(stripped, 1);
    drop(store);
    let second = stack
        .cli_as("approver-2", &["approve", &id, "--follow"])
        .await?;
    // Refused at the syntax gate's dry run, the first job the agent sees.
    assert_eq!(second.code, 1, "{second}");
    assert!(
        second.stderr.contains("refused by its agent (rollout r-")
            && second.stderr.contains("no requester signed this change"),
        "{second}"
    );
    assert!(!deployed(&stack).await?, "nothing deployed");
    let audit = stack.audit_lines()?.join("\n");
    assert!(audit.contains("no requester signed this change"), "{audit}");
    Ok(())
}

/// Routines named `reconcilemupstream` (a disable renames them) and ledger rows.
async fn prod_state(stack: &Stack) -> Result<(i64, i64)> {
    let client = stack.zone("prod").pg.connect().await?;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_proc WHERE proname = 'reconcilemupstream'), \
                    (SELECT count(*) FROM pgrollout.ledger)",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// A prod deploy requested by test-operator and signed by both approvers.
async fn deploy_signed(stack: &Stack) -> Result<()> {
    let parked = stack.cli(&["deploy", "reconcilemupstream", "prod"]).await?;
    assert_eq!(parked.code, 5, "{parked}");
    let id = parked.request_id()?;
    for approver in ["approver-1", "approver-2"] {
        let approved = stack
            .cli_as(approver, &["approve", &id, "--follow"])
            .await?;
        assert_eq!(approved.code, 0, "{approved}");
    }
    Ok(())
}

#[tokio::test]
async fn rollbacks_disable_and_enable_are_signed_and_an_emergency_needs_an_admin() -> Result<()> {
    let stack = prod_with_policy().await?;
    deploy_signed(&stack).await?;
    assert_eq!(prod_state(&stack).await?.0, 1, "deployed");

    // A rollback by its requester: the requester's signature is what the
    // policy asks of an operation (operation_approvers defaults to 0).
    let rollback = stack
        .cli(&["rollback", "reconcilemupstream", "prod"])
        .await?;
    assert_eq!(rollback.code, 0, "{rollback}");
    assert!(
        rollback.stderr.contains("signed: rollback in prod"),
        "{rollback}"
    );
    assert_eq!(prod_state(&stack).await?.0, 0, "rolled back");

    // The same plan again is a new request, signed and approved again.
    deploy_signed(&stack).await?;
    let (live, rows) = prod_state(&stack).await?;
    assert_eq!(live, 1, "deployed again");

    // A break-glass rollback by an operator the agent's policy does not list
    // among its admins: signed, but refused in the zone; nothing changed.
    const EMERGENCY: [&str; 6] = [
        "rollback",
        "reconcilemupstream",
        "prod",
        "--emergency",
        "--reason",
        "prod is down",
    ];
    let by_deployer = stack.cli(&EMERGENCY).await?;
    assert_eq!(by_deployer.code, 1, "{by_deployer}");
    assert!(
        by_deployer
            .stdout
            .contains("needs the signature of an admin"),
        "{by_deployer}"
    );
    assert_eq!(prod_state(&stack).await?, (live, rows), "nothing changed");

    let disabled = stack
        .cli(&["disable", "reconcilemupstream", "prod"])
        .await?;
    assert_eq!(disabled.code, 0, "{disabled}");
    assert!(
        disabled.stderr.contains("signed: disable in prod"),
        "{disabled}"
    );
    assert_eq!(prod_state(&stack).await?.0, 0, "renamed");
    let enabled = stack.cli(&["enable", "reconcilemupstream", "prod"]).await?;
    assert_eq!(enabled.code, 0, "{enabled}");
    assert_eq!(prod_state(&stack).await?.0, 1, "back under its name");

    // The emergency rollback signed by the admin, with its reason, runs.
    let emergency = stack.cli_as("approver-1", &EMERGENCY).await?;
    assert_eq!(emergency.code, 0, "{emergency}");
    assert_eq!(
        prod_state(&stack).await?.0,
        0,
        "rolled back in an emergency"
    );
    let agent_log = stack.all_process_output();
    assert!(
        agent_log.contains("requested by test-operator and approved by nobody (none required)"),
        "{agent_log}"
    );
    assert!(
        agent_log.contains("emergency action signed by admin approver-1"),
        "{agent_log}"
    );
    Ok(())
}

#[tokio::test]
async fn smoke_and_watch_probes_of_the_signed_plan_in_force_run_on_prod() -> Result<()> {
    let stack = prod_with_policy().await?;
    deploy_signed(&stack).await?;
    // `smoke` in prod runs the deployed plan's tests; the controller sends
    // that plan with them, and the agent finds it in force in its ledger.
    let smoke = stack.cli(&["smoke", "reconcilemupstream", "prod"]).await?;
    assert_eq!(smoke.code, 0, "{smoke}");
    assert!(
        smoke.stdout.contains("the smoke tests are those of plan")
            || smoke.stderr.contains("the smoke tests are those of plan"),
        "{smoke}"
    );
    // A watch on prod: its probes (the same tests) pass the same check at
    // every sample.
    let mark = stack.controller.mark();
    let project = stack.project.to_string_lossy().to_string();
    let created = stack
        .cli(&[
            "alert",
            "create",
            "reconcilemupstream",
            "prod",
            "--every",
            "1s",
            "--for",
            "10m",
            "--project",
            &project,
        ])
        .await?;
    assert_eq!(created.code, 0, "{created}");
    let watch = created
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("w-"))
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no watch id in {created}"))?;
    // The first line about the watch after its creation is its first sample.
    let mut mark = mark;
    loop {
        let line = stack
            .controller
            .wait_for_line_after(mark, &watch, std::time::Duration::from_secs(30))
            .await?;
        mark = stack.controller.mark();
        assert!(!line.contains("watch sample failed"), "{line}");
        if line.contains("watch sampled") {
            break;
        }
    }
    let log = stack.all_process_output();
    assert!(!log.contains("watch sample failed"), "{log}");
    assert!(!log.contains("job refused"), "{log}");
    Ok(())
}

#[tokio::test]
async fn smoke_right_after_a_rollback_runs_the_tests_of_the_plan_in_force() -> Result<()> {
    let stack = prod_with_policy().await?;
    deploy_signed(&stack).await?;
    let client = stack.zone("prod").pg.connect().await?;
    let first: String = client
        .query_one(
            "SELECT plan_id FROM pgrollout.ledger ORDER BY id LIMIT 1",
            &[],
        )
        .await?
        .get(0);
    // Two more versions of the routine, each deployed and approved …
    let path = stack.project.join("procedures/reconcilemupstream.sql");
    let text = std::fs::read_to_string(&path)?;
    for version in ["v2", "v3"] {
        let next = text.replace(
            "-- Walk the arcs upwards.",
            &format!("-- Walk the arcs upwards ({version})."),
        );
        assert_ne!(next, text);
        stack.write_procedure("reconcilemupstream.sql", &next)?;
        deploy_signed(&stack).await?;
    }
    // … then rolled back to the first: prod runs the first plan's version
    // again, while the second's deploy is still the newest not undone.
    let rollback = stack
        .cli(&[
            "rollback",
            "reconcilemupstream",
            "prod",
            "--to",
            &first[..12],
        ])
        .await?;
    assert_eq!(rollback.code, 0, "{rollback}");
    // `smoke` runs the tests of the plan in force (the first), which the
    // agent finds as the routine's latest in its ledger — not the newest
    // plan deployed, which is no longer in force.
    let smoke = stack.cli(&["smoke", "reconcilemupstream", "prod"]).await?;
    assert_eq!(smoke.code, 0, "{smoke}");
    let said = format!(
        "the smoke tests are those of plan {} in force",
        &first[..12]
    );
    assert!(
        smoke.stdout.contains(&said) || smoke.stderr.contains(&said),
        "{said:?} in {smoke}"
    );
    Ok(())
}
