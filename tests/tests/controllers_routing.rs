//! Issue 18, items 2 and 3: three controllers on one PostgreSQL store, the
//! operator's CLI on controller A, the agent's stream on B (then C). A job
//! created on A is recorded as waiting for the agent, B offers it on the
//! agent's stream and records what the agent reports, and A follows the job
//! in the store and reports it to the CLI as if the agent were its own.
//!
//! Real processes throughout; the deploy in flight is `stall`, held at its
//! apply by a row lock the test holds (`pgrollout_tests::stall`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgrollout_tests::failover::OtherController;
use pgrollout_tests::stall::{
    agent_blocked, hold_routine_lock, ledger_rollouts, live_body, prepare, rollout_id, state_of,
    AGENT_LOCK_TIMEOUT,
};
use pgrollout_tests::{PgCluster, Process, Stack, StackOptions};

const WAIT: Duration = Duration::from_secs(30);

/// The stack (its controller is A, the CLI's), controllers B and C on the
/// same store, and the dev agent listing only B then C.
struct Three {
    stack: Stack,
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
    stack
        .agent_listing("dev", &[&b.0.agents, &c.0.agents])
        .await?;
    Ok(Three { stack, b, c })
}

/// How many audit entries of `action` name `rollout`.
async fn audited(stack: &Stack, action: &str, rollout: &str) -> Result<usize> {
    stack.audited(action, Some(rollout)).await
}

/// What a user checks after a deploy: the new body is live, the ledger has
/// the rollout once, it was started and finished once in the audit log,
/// and the log verifies.
async fn recorded_once(stack: &Stack, rollout: &str) -> Result<()> {
    let pg = &stack.zone("dev").pg;
    assert_eq!(live_body(pg).await?, "select 2");
    let rows = ledger_rollouts(pg).await?;
    assert_eq!(
        rows.iter().filter(|r| **r == rollout).count(),
        1,
        "exactly one ledger row: {rows:?}"
    );
    assert_eq!(state_of(stack, rollout).await?, "succeeded");
    assert_eq!(audited(stack, "deploy.started", rollout).await?, 1);
    assert_eq!(audited(stack, "job.finished", rollout).await?, 1);
    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_eq!(verify.code, 0, "{verify}");
    Ok(())
}

async fn journal_settled(stack: &Stack) -> Result<()> {
    stack.journal_settled("dev").await
}

#[tokio::test]
async fn a_deploy_on_one_controller_reaches_the_agent_connected_to_another() -> Result<()> {
    let store = PgCluster::start("store").await?;
    let three = three_controllers(&store).await?;
    let stack = &three.stack;
    // The first deploy already goes A → store → B → agent.
    prepare(stack).await?;
    let mark = three.b.1.mark();
    let started = Instant::now();
    let out = stack.cli(&["deploy", "stall", "dev"]).await?;
    let through_a = started.elapsed();
    assert_eq!(out.code, 0, "{out}");
    let rollout = out
        .stdout
        .split_whitespace()
        .chain(out.stderr.split_whitespace())
        .find(|w| w.starts_with("r-"))
        .context("no rollout id in the CLI's output")?
        .trim_end_matches(|c: char| !c.is_alphanumeric())
        .to_owned();
    // B, holding the agent's stream, offered the job A recorded.
    three
        .b
        .1
        .wait_for_line_after(mark, "offering a job another controller recorded", WAIT)
        .await?;
    recorded_once(stack, &rollout).await?;
    // The CLI reports it as for a local agent: every step, the smoke
    // report and the result the agent wrote.
    for line in [
        "[ok] apply",
        "[ok] ledger",
        "[ok] commit",
        "RESULT: [ok] PASS",
    ] {
        assert!(out.stdout.contains(line), "no {line:?} in: {out}");
    }

    // A deploy whose smoke test fails is rolled back on the agent and
    // exits 3 on A's CLI, as it would with the agent on A.
    stack.write_procedure(
        "stall.sql",
        "CREATE OR REPLACE FUNCTION public.stall() RETURNS integer LANGUAGE plpgsql AS $$\n\
         BEGIN RAISE EXCEPTION 'stall is broken' USING ERRCODE = 'P0001'; END\n$$;\n",
    )?;
    stack.write_procedure(
        "stall.toml",
        "[[smoke_tests]]\nname = \"answers\"\ncall = \"SELECT public.stall()\"\nmax_duration = \"2s\"\n",
    )?;
    let failed = stack.cli(&["deploy", "stall", "dev"]).await?;
    assert_eq!(failed.code, 3, "{failed}");
    assert!(
        failed.stdout.contains("[FAIL]") && failed.stdout.contains("stall is broken"),
        "the smoke report the agent wrote: {failed}"
    );
    assert_eq!(live_body(&stack.zone("dev").pg).await?, "select 2");

    // The figure: the same size of deploy asked of B, which holds the
    // agent, against the one asked of A above (printed, not asserted).
    std::fs::remove_file(stack.project.join("procedures").join("stall.toml"))?;
    stack.write_procedure(
        "stall.sql",
        &pgrollout_tests::stall::V2.replace("select 2", "select 3"),
    )?;
    let mut stack = three.stack;
    let a_operators = std::mem::replace(&mut stack.operators, three.b.0.operators.clone());
    let started = Instant::now();
    let local = stack.cli(&["deploy", "stall", "dev"]).await?;
    let through_b = started.elapsed();
    assert_eq!(local.code, 0, "{local}");
    stack.operators = a_operators;
    eprintln!("deploy asked of A (agent on B): {through_a:?}; asked of B itself: {through_b:?}");
    Ok(())
}

#[tokio::test]
async fn killing_the_controller_holding_the_agents_stream_mid_deploy_records_the_outcome_once(
) -> Result<()> {
    let store = PgCluster::start("store").await?;
    let mut three = three_controllers(&store).await?;
    prepare(&three.stack).await?;
    let pg = &three.stack.zone("dev").pg;
    let lock = hold_routine_lock(pg).await?;
    let mut cli = three
        .stack
        .spawn_cli(&["deploy", "stall", "dev"], "deploy")
        .await?;
    let rollout = rollout_id(&cli).await?;
    agent_blocked(pg).await?;

    // B holds the agent's stream: kill it mid-apply.
    let mark = three.stack.agent("dev")?.mark();
    three.b.1.kill_9()?;
    three.b.1.wait_for_exit(WAIT).await?;
    let connected = three
        .stack
        .agent("dev")?
        .wait_for_line_after(mark, "connected to controller", WAIT)
        .await?;
    assert!(connected.contains(&three.c.0.agents), "{connected}");
    // The job ran on through the change of controller, in one transaction.
    agent_blocked(pg).await?;
    assert_eq!(live_body(pg).await?, "select 1");

    lock.batch_execute("ROLLBACK").await?;
    let exit = cli.wait_for_exit(WAIT).await?;
    assert_eq!(
        exit.code(),
        Some(0),
        "the CLI on A reports the deploy C recorded: {}",
        cli.output_so_far()
    );
    // C, which holds the agent's stream now, recorded the result.
    three.c.1.wait_for_line("job result recorded", WAIT).await?;
    assert!(
        cli.output_so_far().contains("[ok] commit"),
        "{}",
        cli.output_so_far()
    );
    journal_settled(&three.stack).await?;
    recorded_once(&three.stack, &rollout).await?;
    // A, which follows the job, is alive: nobody declared it in doubt.
    let interrupted = three
        .stack
        .audit_entries()
        .await?
        .into_iter()
        .filter(|e| e["action"] == "job.interrupted" || e["action"] == "job.unaccounted")
        .count();
    assert_eq!(
        interrupted, 0,
        "the job was never settled without its result"
    );
    Ok(())
}

#[tokio::test]
async fn the_store_restarted_mid_rollout_loses_and_duplicates_no_event() -> Result<()> {
    let store = PgCluster::start("store").await?;
    let three = three_controllers(&store).await?;
    let stack = &three.stack;
    prepare(stack).await?;
    let pg = &stack.zone("dev").pg;
    let lock = hold_routine_lock(pg).await?;
    let mut cli = stack
        .spawn_cli(&["deploy", "stall", "dev"], "deploy")
        .await?;
    let rollout = rollout_id(&cli).await?;
    agent_blocked(pg).await?;

    // The store goes down while the job runs on: the rest of its steps and
    // its result reach B while B cannot store them.
    store.stop().await?;
    let mark = stack.agent("dev")?.mark();
    lock.batch_execute("ROLLBACK").await?;
    stack
        .agent("dev")?
        .wait_for_line_after(mark, "job finished", WAIT)
        .await?;
    store.restart().await?;
    let exit = cli.wait_for_exit(WAIT).await?;
    assert_eq!(exit.code(), Some(0), "{}", cli.output_so_far());
    journal_settled(stack).await?;
    recorded_once(stack, &rollout).await?;

    // Every event the agent sent is stored once, numbered without a gap,
    // and the CLI printed each once.
    let client = store.connect().await?;
    let rows = client
        .query(
            "SELECT e.seq, e.step, e.status FROM job_events e JOIN jobs j ON j.id = e.job_id
             WHERE j.rollout_id = $1 ORDER BY e.seq",
            &[&rollout],
        )
        .await?;
    let seqs: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert!(!seqs.is_empty(), "the job's events are stored");
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "no event lost"
    );
    let output = cli.output_so_far();
    let mut steps = 0;
    for row in &rows {
        let (step, status): (String, String) = (row.get(1), row.get(2));
        if status.ends_with("SUCCEEDED") {
            steps += 1;
            let printed = output
                .lines()
                .filter(|l| l.trim_start().starts_with(&format!("[ok] {step} ")))
                .count();
            assert_eq!(printed, 1, "{step} printed once: {output}");
        }
    }
    assert!(steps >= 5, "the deploy's steps were stored: {seqs:?}");
    Ok(())
}

#[tokio::test]
async fn killing_the_controller_the_operator_asked_mid_deploy_leaves_the_outcome_recorded_once(
) -> Result<()> {
    let store = PgCluster::start("store").await?;
    let mut three = three_controllers(&store).await?;
    prepare(&three.stack).await?;
    let pg = &three.stack.zone("dev").pg;
    let lock = hold_routine_lock(pg).await?;
    let mut cli = three
        .stack
        .spawn_cli(&["deploy", "stall", "dev"], "deploy")
        .await?;
    let rollout = rollout_id(&cli).await?;
    agent_blocked(pg).await?;

    // A follows the job from afar; it dies, B (holding the agent) lives.
    three.stack.kill_9_controller().await?;
    let exit = cli.wait_for_exit(WAIT).await?;
    // One address listed: nobody to fail over to, an honest exit 2
    // (`controllers_cli_failover.rs` lists several).
    assert_eq!(exit.code(), Some(2), "{}", cli.output_so_far());
    assert!(
        !cli.output_so_far().contains("following r-"),
        "{}",
        cli.output_so_far()
    );
    assert!(
        cli.output_so_far()
            .contains(&format!("pgrollout status {rollout}")),
        "the CLI says where to look: {}",
        cli.output_so_far()
    );
    lock.batch_execute("ROLLBACK").await?;
    three.b.1.wait_for_line("job result recorded", WAIT).await?;
    // The operator asks C: the outcome B recorded, once.
    three.stack.operators = three.c.0.operators.clone();
    journal_settled(&three.stack).await?;
    recorded_once(&three.stack, &rollout).await?;
    Ok(())
}
