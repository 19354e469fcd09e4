//! Stopping pgrollout like a service (issue 21, item 2): SIGTERM drains.
//! A controller stops offering jobs, lets those out with agents report and
//! relays their results before it exits; an agent finishes its job, tells
//! the controller it is draining (so it is offered nothing new) and exits
//! once its result is acknowledged. The deploy is stalled at its apply by a
//! lock the test holds (`pgrollout_tests::stall`), so the signal lands mid-job.

use std::time::Duration;

use anyhow::Result;
use pgrollout_tests::stall::{
    agent_blocked, hold_routine_lock, ledger_rollouts, live_body, prepare, rollout_id, state_of,
    AGENT_LOCK_TIMEOUT,
};
use pgrollout_tests::{Stack, StackOptions};

const WAIT: Duration = Duration::from_secs(30);

async fn stack(deployment_extra: &str) -> Result<Stack> {
    let stack = Stack::start_with(StackOptions {
        agent_timeouts: AGENT_LOCK_TIMEOUT.into(),
        deployment_extra: deployment_extra.into(),
        ..StackOptions::default()
    })
    .await?;
    prepare(&stack).await?;
    Ok(stack)
}

#[tokio::test]
async fn a_stopping_controller_relays_the_result_of_the_job_in_flight_and_takes_no_new_rollout(
) -> Result<()> {
    let mut stack = stack("drain_timeout = \"60s\"").await?;
    let pg = &stack.zone("dev").pg;
    let lock = hold_routine_lock(pg).await?;
    let mut cli = stack
        .spawn_cli(&["deploy", "stall", "dev"], "deploy")
        .await?;
    let rollout = rollout_id(&cli).await?;
    agent_blocked(pg).await?;

    stack.controller.sigterm().await?;
    stack
        .controller
        .wait_for_line("draining: no new rollouts", WAIT)
        .await?;
    // While it drains the controller still answers, but starts nothing.
    let refused = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(refused.code, 2, "{refused}");
    assert!(
        refused.stderr.contains("shutting down") && refused.stderr.contains("no new rollouts"),
        "{refused}"
    );

    lock.batch_execute("ROLLBACK").await?;
    let status = cli.wait_for_exit(WAIT).await?;
    assert_eq!(
        status.code(),
        Some(0),
        "the operator sees the committed deploy succeed: {}",
        cli.output_so_far()
    );
    let status = stack.controller.wait_for_exit(WAIT).await?;
    assert!(
        status.success(),
        "controller exit {status}: {}",
        stack.controller.output_so_far()
    );
    assert!(stack
        .controller
        .output_so_far()
        .contains("drained: every job in flight has reported"));
    let pg = &stack.zone("dev").pg;
    assert_eq!(live_body(pg).await?, "select 2");
    assert!(ledger_rollouts(pg).await?.contains(&rollout));
    let rows = stack
        .store_rows(
            "SELECT state, CAST((SELECT count(*) FROM rollouts AS later WHERE later.created_at > r.created_at) AS TEXT) \
             FROM rollouts AS r WHERE id = $1",
            &[&rollout],
        )
        .await?;
    let (state, refused_rollouts) = (rows[0][0].as_deref(), rows[0][1].as_deref());
    assert_eq!(
        state,
        Some("succeeded"),
        "the store recorded the relayed result"
    );
    assert_eq!(
        refused_rollouts,
        Some("0"),
        "the deploy refused while draining left no rollout"
    );
    Ok(())
}

#[tokio::test]
async fn a_stopping_agent_finishes_its_job_reports_it_and_is_offered_nothing_new() -> Result<()> {
    let mut stack = stack("").await?;
    let pg = &stack.zone("dev").pg;
    let lock = hold_routine_lock(pg).await?;
    let mut cli = stack
        .spawn_cli(&["deploy", "stall", "dev"], "deploy")
        .await?;
    let rollout = rollout_id(&cli).await?;
    agent_blocked(pg).await?;

    let zone = stack.zones.get_mut("dev").expect("zone dev");
    let mut agent = zone.agent.take().expect("the dev agent runs");
    agent.sigterm().await?;
    agent
        .wait_for_line("agent draining: finishing its jobs", WAIT)
        .await?;
    stack
        .controller
        .wait_for_line("agent draining: no new jobs offered to it", WAIT)
        .await?;
    let agents = stack.cli(&["agents"]).await?;
    assert!(agents.stdout.contains("(draining"), "{agents}");
    // The only agent of the zone drains: a new deploy finds none to run it.
    let refused = stack
        .cli(&["deploy", "reconcilemupstream", "dev", "--agent-wait", "1s"])
        .await?;
    assert_eq!(refused.code, 2, "{refused}");
    assert!(
        refused.stderr.contains("no agent connected for zone dev"),
        "{refused}"
    );

    lock.batch_execute("ROLLBACK").await?;
    let status = cli.wait_for_exit(WAIT).await?;
    assert_eq!(status.code(), Some(0), "{}", cli.output_so_far());
    let status = agent.wait_for_exit(WAIT).await?;
    assert!(status.success(), "agent exit {status}");
    assert!(agent
        .output_so_far()
        .contains("drained, every job finished and reported"));
    assert_eq!(state_of(&stack, &rollout).await?, "succeeded");
    let pg = &stack.zone("dev").pg;
    assert_eq!(live_body(pg).await?, "select 2");
    assert!(ledger_rollouts(pg).await?.contains(&rollout));
    let audit = stack.audit_lines()?;
    assert!(
        audit.iter().any(|line| line.contains("agent.draining")),
        "{audit:#?}"
    );
    Ok(())
}
