//! Issue 19 through the real controller and CLI: a prod deploy that needs two
//! approvals is signed by its requester at `deploy` and by each approver at
//! `approve`; the controller keeps and forwards the statements, and the prod
//! agent, with an `[approvals]` policy, verifies them and runs it. When the
//! controller's store loses a statement, the agent refuses, nothing changes,
//! and the refusal is in the controller's audit log.

use anyhow::Result;
use pgrollout_tests::stack::{Stack, StackOptions};

async fn prod_with_policy() -> Result<Stack> {
    let mut stack = Stack::start_with(StackOptions {
        zones: vec!["prod".into()],
        start_agents: false,
        environment_extra: vec![(
            "prod".into(),
            "require_approval = true\napprovals = 2".into(),
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
             approvers = [\"approver-1\", \"approver-2\"]\nrequired_approvers = 2\n",
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
    assert_eq!(second.code, 1, "{second}");
    assert!(
        second.stdout.contains("no requester signed this change"),
        "{second}"
    );
    assert!(!deployed(&stack).await?, "nothing deployed");
    let audit = stack.audit_lines()?.join("\n");
    assert!(audit.contains("no requester signed this change"), "{audit}");
    Ok(())
}
