//! Issue 19 with issue 24 through the real controller, CLI and agents: a
//! fleet of three targets in two zones, each zone's agent with an
//! `[approvals]` policy. The deploy is signed once for the fleet's set (its
//! requester at `deploy`, an approver at `approve`), halts on the target
//! whose smoke test fails, is resumed with the resume signed by the operator
//! who runs it, and is rolled back with `rollback --rollout f-…`, signed —
//! every target's catalog and ledger asserted. The attacks (an altered
//! member list, a statement replayed outside the fleet, an unsigned resume)
//! are `signed_approvals_fleet.rs`'s, through a hostile controller.

use anyhow::{Context, Result};
use pgrollout_tests::fleet::ExtraTarget;
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::{Stack, StackOptions};

const FLEET: &str = r#"
[environments.prod]
zones = ["prod-eu", "prod-us"]
labels = { tier = "prod" }
require_approval = true
approvals = 1
[environments.prod.rollout]
canary = "prod-eu/t1"
max_concurrent = 1
"#;

/// Answers 42, unless its database holds a `fleet_poison` table: then its
/// smoke test fails there, and only there.
const ANSWER_SQL: &str = "CREATE OR REPLACE FUNCTION public.fleet_answer() RETURNS integer \
    LANGUAGE plpgsql AS $$\nBEGIN\n  IF to_regclass('public.fleet_poison') IS NOT NULL THEN\n    \
    RAISE EXCEPTION 'this target is poisoned';\n  END IF;\n  RETURN 42;\nEND;\n$$;\n";

const ANSWER_TOML: &str = r#"
[[smoke_tests]]
name = "answers 42"
routine = "fleet_answer()"
call = "SELECT public.fleet_answer()"
max_duration = "5s"
expect_columns = [ { name = "fleet_answer", type = "integer" } ]
"#;

const TARGETS: [(&str, &str); 3] = [("prod-eu", "t1"), ("prod-eu", "t2"), ("prod-us", "t1")];

/// prod-eu with t1 and t2, prod-us with t1, all labelled prod; both agents
/// require a requester and one approver (approver-1 or approver-2).
async fn signed_fleet() -> Result<Stack> {
    let mut stack = Stack::start_with(StackOptions {
        zones: vec!["prod-eu".into(), "prod-us".into()],
        start_agents: false,
        controller_extra: FLEET.into(),
        ..StackOptions::default()
    })
    .await?;
    let prod = |name| ExtraTarget {
        name,
        labels: "tier = \"prod\"",
    };
    stack
        .add_targets("prod-eu", &[prod("t1"), prod("t2")])
        .await?;
    stack.add_targets("prod-us", &[prod("t1")]).await?;
    for zone in ["prod-eu", "prod-us"] {
        let path = stack.zone(zone).agent_config.clone();
        let config = std::fs::read_to_string(&path)?;
        std::fs::write(
            &path,
            format!(
                "{config}\n[approvals]\noperator_ca = \"{}\"\nenvironment = \"prod\"\n\
                 approvers = [\"approver-1\", \"approver-2\"]\nadmins = [\"approver-1\"]\nrequired_approvers = 1\n",
                stack.ca_dir.join("ca.pem").display()
            ),
        )?;
        stack.start_agent(zone).await?;
    }
    stack.write_procedure("fleet_answer.sql", ANSWER_SQL)?;
    stack.write_procedure("fleet_answer.toml", ANSWER_TOML)?;
    Ok(stack)
}

async fn has_answer(client: &Client) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT to_regprocedure('public.fleet_answer()') IS NOT NULL",
            &[],
        )
        .await?
        .get(0))
}

/// Which of the fleet's targets have the function now.
async fn deployed(stack: &Stack) -> Result<Vec<bool>> {
    let mut found = Vec::new();
    for (zone, target) in TARGETS {
        found.push(has_answer(&stack.connect_target(zone, target).await?).await?);
    }
    Ok(found)
}

fn the_fleet_rollout(stack: &Stack) -> Result<String> {
    let store = rusqlite::Connection::open(stack.dir.path().join("controller.sqlite"))?;
    store
        .query_row("SELECT id FROM fleet_rollouts", [], |row| row.get(0))
        .context("one fleet rollout recorded")
}

#[tokio::test]
async fn a_signed_fleet_deploys_resumes_and_rolls_back_with_every_agent_verifying() -> Result<()> {
    let stack = signed_fleet().await?;
    let poisoned = stack.connect_target("prod-us", "t1").await?;
    poisoned
        .batch_execute("CREATE TABLE public.fleet_poison ()")
        .await?;

    // Requested and signed once for the set of three targets.
    let parked = stack.cli(&["deploy", "fleet_answer", "prod"]).await?;
    assert_eq!(parked.code, 5, "{parked}");
    assert!(
        parked
            .stderr
            .contains("signing for the fleet of 3 target(s): prod-eu/t1, prod-eu/t2, prod-us/t1"),
        "{parked}"
    );
    let id = parked.request_id()?;
    let approved = stack
        .cli_as("approver-1", &["approve", &id, "--follow"])
        .await?;
    assert!(
        approved
            .stderr
            .contains("signing for the fleet of 3 target(s)"),
        "{approved}"
    );
    // prod-us/t1's smoke test fails: the rollout halts there.
    assert_eq!(deployed(&stack).await?, [true, true, false], "{approved}");
    let fleet = the_fleet_rollout(&stack)?;
    let status = stack.cli(&["status", &fleet]).await?;
    assert!(status.stdout.contains("halted"), "{status}");
    let log = stack.all_process_output();
    assert!(
        log.contains("requested by test-operator and approved by approver-1"),
        "{log}"
    );
    assert!(!log.contains("job refused"), "{log}");

    // Resumed by an operator, signed: the agent where it failed asks for it.
    poisoned
        .batch_execute("DROP TABLE public.fleet_poison")
        .await?;
    let resumed = stack.cli(&["resume", &fleet]).await?;
    assert_eq!(resumed.code, 0, "{resumed}");
    assert!(
        resumed
            .stderr
            .contains(&format!("signed: resume of {fleet} in prod")),
        "{resumed}"
    );
    assert_eq!(deployed(&stack).await?, [true, true, true], "{resumed}");

    // Rolled back as a whole, signed for the fleet rollout's members.
    let rolled_back = stack.cli(&["rollback", "--rollout", &fleet]).await?;
    assert_eq!(rolled_back.code, 0, "{rolled_back}");
    assert!(
        rolled_back.stderr.contains("signed: rollback in prod"),
        "{rolled_back}"
    );
    assert_eq!(
        deployed(&stack).await?,
        [false, false, false],
        "{rolled_back}"
    );
    let log = stack.all_process_output();
    assert!(!log.contains("job refused"), "{log}");
    Ok(())
}
