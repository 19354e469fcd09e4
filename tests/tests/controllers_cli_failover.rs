//! Issue 18, item 3: "kill -9 the one holding an agent's stream in the
//! middle of a deploy → the deploy's outcome is recorded exactly once and
//! the CLI (reconnecting to another controller) reports it". Three
//! controllers on one PostgreSQL store; the CLI lists all three and talks to
//! A, which also holds the dev agent's stream (the agent lists A, B, C). A is
//! killed with SIGKILL while the deploy is held at its apply by a row lock
//! the test holds (`pgrollout_tests::stall`): the agent moves to B, the CLI
//! follows the rollout on B or C from the store and ends with the report
//! and the exit code it would have given on A.
//!
//! A CLI listing one controller keeps its honest exit 2 naming `pgrollout
//! status <id>` (`controllers_routing.rs`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgrollout_tests::failover::OtherController;
use pgrollout_tests::stall::{
    agent_blocked, hold_routine_lock, ledger_rollouts, live_body, prepare, rollout_id, state_of,
    AGENT_LOCK_TIMEOUT,
};
use pgrollout_tests::{PgCluster, Process, Stack, StackOptions};

const WAIT: Duration = Duration::from_secs(30);

/// The stack (its controller is A), controllers B and C on the same store,
/// the dev agent on A (listing A, B, C), and the CLI listing A, B, C.
struct Three {
    stack: Stack,
    a_operators: String,
    b: (OtherController, Process),
    c: (OtherController, Process),
}

async fn three_controllers(store: &PgCluster) -> Result<Three> {
    let mut stack = Stack::start_with(StackOptions {
        agent_timeouts: AGENT_LOCK_TIMEOUT.into(),
        store_url: Some(store.url()),
        ..StackOptions::default()
    })
    .await?;
    let [b, c] = stack.start_b_and_c().await?;
    let a_agents = stack.agents_address.clone();
    stack
        .agent_listing("dev", &[&a_agents, &b.0.agents, &c.0.agents])
        .await?;
    let a_operators = stack.operators.clone();
    stack.operators = format!("{a_operators},{},{}", b.0.operators, c.0.operators);
    Ok(Three {
        stack,
        a_operators,
        b,
        c,
    })
}

/// How many audit entries of `action` name `rollout`.
async fn audited(stack: &Stack, action: &str, rollout: &str) -> Result<usize> {
    stack.audited(action, Some(rollout)).await
}

async fn journal_settled(stack: &Stack) -> Result<()> {
    stack.journal_settled("dev").await
}

/// Kills A mid-apply and returns the CLI's line saying it follows on.
async fn kill_a_and_see_the_cli_follow_on(three: &mut Three, cli: &Process) -> Result<String> {
    let agent_mark = three.stack.agent("dev")?.mark();
    let killed = Instant::now();
    three.stack.kill_9_controller().await?;
    let following = cli.wait_for_line("following r-", WAIT).await?;
    // The figure: how long the CLI took to follow on (printed, not asserted).
    eprintln!(
        "the CLI followed on another controller {:?} after A was killed",
        killed.elapsed()
    );
    assert!(
        following.contains(&format!("lost the controller at {}", three.a_operators))
            && (following.contains(&three.b.0.operators)
                || following.contains(&three.c.0.operators)),
        "the CLI names the controller it lost and the one it follows on: {following}"
    );
    // The agent, whose stream A held, is on another controller now.
    three
        .stack
        .agent("dev")?
        .wait_for_line_after(agent_mark, "connected to controller", WAIT)
        .await?;
    Ok(following)
}

#[tokio::test]
async fn a_cli_listing_three_controllers_reports_the_deploy_after_its_controller_is_killed(
) -> Result<()> {
    let store = PgCluster::start("store").await?;
    let mut three = three_controllers(&store).await?;
    prepare(&three.stack).await?;
    let lock = hold_routine_lock(&three.stack.zone("dev").pg).await?;
    let mut cli = three
        .stack
        .spawn_cli(&["deploy", "stall", "dev"], "deploy")
        .await?;
    let rollout = rollout_id(&cli).await?;
    agent_blocked(&three.stack.zone("dev").pg).await?;

    kill_a_and_see_the_cli_follow_on(&mut three, &cli).await?;
    let pg = &three.stack.zone("dev").pg;
    // The job runs on, in its one transaction, through the change.
    agent_blocked(pg).await?;
    assert_eq!(live_body(pg).await?, "select 1");
    lock.batch_execute("ROLLBACK").await?;
    let exit = cli.wait_for_exit(WAIT).await?;
    let output = cli.output_so_far();
    assert_eq!(exit.code(), Some(0), "the deploy's own code: {output}");
    // The normal report: the steps after the loss, once each, and the log.
    assert_eq!(
        output
            .lines()
            .filter(|l| l.trim_start().starts_with("[ok] commit"))
            .count(),
        1,
        "{output}"
    );
    assert!(output.contains("DEPLOYMENT LOG"), "{output}");
    assert!(!output.contains("ended without a result"), "{output}");
    // A answered the deploy: nothing was skipped then. Now it is dead, and
    // a command says which controller answered instead.
    assert!(!output.contains("did not answer"), "{output}");
    let status = three.stack.cli(&["status", &rollout]).await?;
    assert!(
        status.stderr.contains(&format!(
            "{} did not answer; using the controller at",
            three.a_operators
        )),
        "{status}"
    );

    // Recorded once, by the controller the agent's journal reached.
    journal_settled(&three.stack).await?;
    let stack = &three.stack;
    assert_eq!(live_body(pg).await?, "select 2");
    let rows = ledger_rollouts(pg).await?;
    assert_eq!(
        rows.iter().filter(|r| **r == rollout).count(),
        1,
        "exactly one ledger row: {rows:?}"
    );
    assert_eq!(state_of(stack, &rollout).await?, "succeeded");
    assert_eq!(audited(stack, "deploy.started", &rollout).await?, 1);
    assert_eq!(audited(stack, "job.finished", &rollout).await?, 1);
    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_eq!(verify.code, 0, "{verify}");

    // `status --follow` of a finished rollout, on any controller: its
    // steps and result, and the deploy's code.
    let followed = stack.cli(&["status", &rollout, "--follow"]).await?;
    assert_eq!(followed.code, 0, "{followed}");
    assert!(followed.stdout.contains("[ok] commit"), "{followed}");
    Ok(())
}

#[tokio::test]
async fn a_smoke_failure_is_reported_with_exit_3_after_the_cli_reconnects_even_past_unknown(
) -> Result<()> {
    let store = PgCluster::start("store").await?;
    let mut three = three_controllers(&store).await?;
    prepare(&three.stack).await?;
    three.stack.write_procedure(
        "stall.sql",
        "CREATE OR REPLACE FUNCTION public.stall() RETURNS integer LANGUAGE plpgsql AS $$\n\
         BEGIN RAISE EXCEPTION 'stall is broken' USING ERRCODE = 'P0001'; END\n$$;\n",
    )?;
    three.stack.write_procedure(
        "stall.toml",
        "[[smoke_tests]]\nname = \"answers\"\ncall = \"SELECT public.stall()\"\nmax_duration = \"2s\"\n",
    )?;
    let lock = hold_routine_lock(&three.stack.zone("dev").pg).await?;
    let mut cli = three
        .stack
        .spawn_cli(&["deploy", "stall", "dev"], "deploy")
        .await?;
    let rollout = rollout_id(&cli).await?;
    agent_blocked(&three.stack.zone("dev").pg).await?;
    kill_a_and_see_the_cli_follow_on(&mut three, &cli).await?;

    // A offered the job and is dead: a live controller's sweep settles the
    // rollout `unknown` while the agent still runs it. The CLI says so and
    // waits on.
    let doubt = cli
        .wait_for_line("is unknown for now", WAIT)
        .await
        .with_context(|| cli.output_so_far())?;
    assert!(doubt.contains(&rollout), "{doubt}");
    assert_eq!(state_of(&three.stack, &rollout).await?, "unknown");
    assert!(
        cli.exit_status()?.is_none(),
        "the CLI gave up on a rollout in doubt: {}",
        cli.output_so_far()
    );
    // Waited on only until --follow-timeout: then an honest exit 2.
    let waiting = three
        .stack
        .cli(&["status", &rollout, "--follow", "--follow-timeout", "1s"])
        .await?;
    assert_eq!(waiting.code, 2, "{waiting}");
    assert!(
        waiting.stderr.contains("is unknown for now")
            && waiting
                .stderr
                .contains(&format!("pgrollout status {rollout}")),
        "{waiting}"
    );

    // The result reaches B, which corrects the rollout; the CLI reports it.
    lock.batch_execute("ROLLBACK").await?;
    let exit = cli.wait_for_exit(WAIT).await?;
    let output = cli.output_so_far();
    assert_eq!(exit.code(), Some(3), "the smoke failure's code: {output}");
    assert!(
        output.contains("[FAIL]") && output.contains("stall is broken"),
        "the smoke report the agent wrote: {output}"
    );
    journal_settled(&three.stack).await?;
    let stack = &three.stack;
    let pg = &stack.zone("dev").pg;
    assert_eq!(live_body(pg).await?, "select 1", "rolled back on the agent");
    assert_eq!(state_of(stack, &rollout).await?, "failed");
    let followed = stack.cli(&["status", &rollout, "--follow"]).await?;
    assert_eq!(followed.code, 3, "the truth, once recorded: {followed}");
    assert_eq!(audited(stack, "job.finished", &rollout).await?, 1);
    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_eq!(verify.code, 0, "{verify}");
    Ok(())
}

#[tokio::test]
async fn a_rollback_is_followed_to_its_result_after_the_cli_loses_its_controller() -> Result<()> {
    let store = PgCluster::start("store").await?;
    let mut three = three_controllers(&store).await?;
    prepare(&three.stack).await?;
    let deployed = three.stack.cli(&["deploy", "stall", "dev"]).await?;
    assert_eq!(deployed.code, 0, "{deployed}");
    let undone = deployed.rollout_id()?;
    let lock = hold_routine_lock(&three.stack.zone("dev").pg).await?;
    let mut cli = three
        .stack
        .spawn_cli(&["rollback", "stall", "dev"], "rollback")
        .await?;
    let rollout = rollout_id(&cli).await?;
    agent_blocked(&three.stack.zone("dev").pg).await?;
    kill_a_and_see_the_cli_follow_on(&mut three, &cli).await?;

    lock.batch_execute("ROLLBACK").await?;
    let exit = cli.wait_for_exit(WAIT).await?;
    let output = cli.output_so_far();
    assert_eq!(exit.code(), Some(0), "the rollback's own code: {output}");
    assert!(!output.contains("ended without a result"), "{output}");
    journal_settled(&three.stack).await?;
    let stack = &three.stack;
    assert_eq!(live_body(&stack.zone("dev").pg).await?, "select 1");
    assert_eq!(state_of(stack, &rollout).await?, "succeeded");
    assert_eq!(audited(stack, "job.finished", &rollout).await?, 1);
    // The deploy it undid is marked by the controller that recorded the
    // rollback's result: the one that started the rollback is dead.
    assert_eq!(state_of(stack, &undone).await?, "rolled_back");
    assert_eq!(audited(stack, "rollout.rolled_back", &undone).await?, 1);
    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_eq!(verify.code, 0, "{verify}");
    Ok(())
}
