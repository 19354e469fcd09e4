//! Real faults on real processes (issue 8): kill -9 of the agent and of the
//! controller mid-deploy, a black-holed link healed within and beyond the
//! job's lease, PostgreSQL restarted mid-deploy, concurrent rollouts. After
//! each: the catalog, the target's ledger and the controller's record agree,
//! and nothing was applied twice.
//!
//! A deploy is stalled at its apply step by a row lock the test holds on the
//! routine's `pg_proc` row (an uncommitted `ALTER FUNCTION`), so the fault
//! lands at a known point: after the backup, inside the open transaction.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use pgrollout_tests::proxy::{LinkMode, Proxy};
use pgrollout_tests::stall::{
    agent_blocked, hold_routine_lock, ledger_rollouts, live_body, prepare, rollout_id, state_of,
    AGENT_LOCK_TIMEOUT,
};
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::{PgCluster, Process, Stack, StackOptions};

const WAIT: Duration = Duration::from_secs(30);

fn options(deployment_extra: &str) -> StackOptions {
    StackOptions {
        // Long enough that the stalled apply waits on the test's lock.
        agent_timeouts: AGENT_LOCK_TIMEOUT.into(),
        deployment_extra: deployment_extra.into(),
        ..StackOptions::default()
    }
}

/// A stack whose deploy of `stall` v2 is stalled at its apply by the test's
/// row lock: the fault lands inside the open transaction.
struct Stalled {
    stack: Stack,
    /// Between agent and controller, when asked for.
    proxy: Option<Proxy>,
    /// Roll it back to let the apply go on.
    lock: Client,
    /// The running `pgrollout deploy`.
    cli: Process,
    rollout: String,
}

async fn stalled_deploy(deployment_extra: &str, through_proxy: bool) -> Result<Stalled> {
    let mut stack = Stack::start_with(options(deployment_extra)).await?;
    let proxy = if through_proxy {
        let proxy = Proxy::start(stack.agents_port()).await?;
        stack.kill_agent("dev").await?;
        stack.route_agent_via("dev", proxy.port())?;
        stack.start_agent("dev").await?;
        Some(proxy)
    } else {
        None
    };
    prepare(&stack).await?;
    let lock = hold_routine_lock(&stack.zone("dev").pg).await?;
    let cli = stack
        .spawn_cli(&["deploy", "stall", "dev"], "deploy")
        .await?;
    let rollout = rollout_id(&cli).await?;
    agent_blocked(&stack.zone("dev").pg).await?;
    Ok(Stalled {
        stack,
        proxy,
        lock,
        cli,
        rollout,
    })
}

/// Waits until no agent session holds or waits for anything (the backend
/// of a killed agent has gone).
async fn agent_sessions_gone(pg: &PgCluster) -> Result<()> {
    let client = pg.connect().await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let sessions: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgrollout'",
                &[],
            )
            .await?
            .get(0);
        if sessions == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("agent sessions still present after {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the controller records the rollout's result (its log line).
async fn result_recorded(stack: &Stack, mark: pgrollout_tests::OutputMark) -> Result<()> {
    stack
        .controller
        .wait_for_line_after(mark, "job result recorded", WAIT)
        .await
        .map(drop)
}

#[tokio::test]
async fn an_agent_killed_mid_apply_changes_nothing_and_its_restart_settles_the_rollout(
) -> Result<()> {
    let Stalled {
        mut stack,
        lock,
        cli,
        rollout,
        ..
    } = stalled_deploy("job_lease = \"2s\"", false).await?;

    stack.kill_agent("dev").await?;
    // The CLI waits one lease for the agent to come back, then says unknown.
    let mut cli = cli;
    let status = cli.wait_for_exit(WAIT).await?;
    assert_eq!(status.code(), Some(2), "{}", cli.output_so_far());
    assert!(
        cli.output_so_far().contains("unknown"),
        "{}",
        cli.output_so_far()
    );
    assert_eq!(state_of(&stack, &rollout).await?, "unknown");

    // The killed agent's transaction never commits: releasing the lock
    // lets its backend notice the dead client and roll back.
    lock.batch_execute("ROLLBACK").await?;
    let pg = &stack.zone("dev").pg;
    agent_sessions_gone(pg).await?;
    assert_eq!(live_body(pg).await?, "select 1");

    let mark = stack.controller.mark();
    stack.start_agent("dev").await?;
    result_recorded(&stack, mark).await?;
    assert_eq!(state_of(&stack, &rollout).await?, "failed");
    let pg = &stack.zone("dev").pg;
    assert_eq!(live_body(pg).await?, "select 1", "nothing applied");
    assert!(
        !ledger_rollouts(pg).await?.contains(&rollout),
        "no ledger row for the interrupted rollout"
    );
    let status = stack.cli(&["status", &rollout]).await?;
    assert!(
        status.stdout.contains("restarted before job") && status.stdout.contains("nothing changed"),
        "{status}"
    );
    // Retrying an already-settled rollout is refused.
    let retry = stack.cli(&["retry", &rollout]).await?;
    assert_eq!(retry.code, 1, "{retry}");
    assert!(retry.stderr.contains("not unknown"), "{retry}");
    Ok(())
}

#[tokio::test]
async fn a_controller_killed_mid_rollout_gets_the_result_from_the_agents_outbox() -> Result<()> {
    let Stalled {
        mut stack,
        lock,
        mut cli,
        rollout,
        ..
    } = stalled_deploy("", false).await?;

    stack.kill_9_and_restart_controller(|config| config).await?;
    let status = cli.wait_for_exit(WAIT).await?;
    assert_eq!(status.code(), Some(2), "{}", cli.output_so_far());
    assert!(
        cli.output_so_far()
            .contains(&format!("pgrollout status {rollout}")),
        "{}",
        cli.output_so_far()
    );

    // The agent finishes while the new controller starts; its result waits
    // in the journal until the agent reconnects.
    let mark = stack.controller.mark();
    lock.batch_execute("ROLLBACK").await?;
    result_recorded(&stack, mark).await?;
    assert_eq!(state_of(&stack, &rollout).await?, "succeeded");
    let pg = &stack.zone("dev").pg;
    assert_eq!(live_body(pg).await?, "select 2");
    let rows = ledger_rollouts(pg).await?;
    assert_eq!(
        rows.iter().filter(|r| **r == rollout).count(),
        1,
        "exactly one ledger row: {rows:?}"
    );
    let audit = stack.cli(&["audit", "--rollout", &rollout]).await?;
    assert_eq!(audit.code, 0, "{audit}");
    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_eq!(verify.code, 0, "{verify}");
    Ok(())
}

#[tokio::test]
async fn a_black_holed_link_healed_within_the_lease_delivers_the_result_once() -> Result<()> {
    let Stalled {
        stack,
        proxy,
        lock,
        mut cli,
        rollout,
    } = stalled_deploy("", true).await?;
    let proxy = proxy.context("no proxy")?;

    let agent = stack.zone("dev").agent.as_ref().context("agent")?;
    let mark = agent.mark();
    proxy.set(LinkMode::BlackHole);
    lock.batch_execute("ROLLBACK").await?;
    // The job commits while the link is dead; the agent notices the silence.
    agent
        .wait_for_line_after(mark, "link to controller lost", WAIT)
        .await?;
    let reconnected = agent.mark();
    proxy.set(LinkMode::Pass);
    agent
        .wait_for_line_after(reconnected, "connected to controller", WAIT)
        .await?;

    let status = cli.wait_for_exit(WAIT).await?;
    assert_eq!(status.code(), Some(0), "{}", cli.output_so_far());
    assert_eq!(state_of(&stack, &rollout).await?, "succeeded");
    let pg = &stack.zone("dev").pg;
    assert_eq!(live_body(pg).await?, "select 2");
    let rows = ledger_rollouts(pg).await?;
    assert_eq!(
        rows.iter().filter(|r| **r == rollout).count(),
        1,
        "{rows:?}"
    );
    let audit = stack.cli(&["audit", "--rollout", &rollout]).await?;
    let finished = audit.stdout.matches("job.finished").count();
    assert_eq!(finished, 1, "the result is recorded once: {audit}");
    Ok(())
}

#[tokio::test]
async fn a_black_hole_outlasting_the_lease_fences_the_job_before_commit() -> Result<()> {
    let Stalled {
        stack,
        proxy,
        lock,
        mut cli,
        rollout,
    } = stalled_deploy("job_lease = \"2s\"", true).await?;
    let proxy = proxy.context("no proxy")?;
    let pg = &stack.zone("dev").pg;

    let agent = stack.zone("dev").agent.as_ref().context("agent")?;
    let mark = agent.mark();
    proxy.set(LinkMode::BlackHole);
    agent.wait_for_line_after(mark, "job fenced", WAIT).await?;
    // The fenced session is gone before the lock is released: the change
    // can no longer commit.
    agent_sessions_gone(pg).await?;
    lock.batch_execute("ROLLBACK").await?;
    proxy.set(LinkMode::Pass);

    let status = cli.wait_for_exit(WAIT).await?;
    let output = cli.output_so_far();
    assert_eq!(status.code(), Some(2), "{output}");
    let mark = stack.controller.mark();
    if state_of(&stack, &rollout).await? != "failed" {
        // The CLI gave up after one lease; the fenced result follows.
        result_recorded(&stack, mark).await?;
    }
    assert_eq!(state_of(&stack, &rollout).await?, "failed");
    let described = stack.cli(&["status", &rollout]).await?;
    assert!(described.stdout.contains("fenced"), "{described}");
    let pg = &stack.zone("dev").pg;
    assert_eq!(live_body(pg).await?, "select 1", "database unchanged");
    assert!(!ledger_rollouts(pg).await?.contains(&rollout));
    Ok(())
}

#[tokio::test]
async fn postgres_restarted_mid_deploy_fails_cleanly() -> Result<()> {
    let stack = Stack::start_with(options("")).await?;
    prepare(&stack).await?;
    let pg = &stack.zone("dev").pg;
    let _lock = hold_routine_lock(pg).await?;
    let mut cli = stack
        .spawn_cli(&["deploy", "stall", "dev"], "deploy")
        .await?;
    agent_blocked(pg).await?;

    pg.restart().await?;
    let status = cli.wait_for_exit(WAIT).await?;
    let output = cli.output_so_far();
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(
        output.contains("terminating connection") || output.contains("connection closed"),
        "the message names the lost database connection: {output}"
    );
    assert_eq!(live_body(pg).await?, "select 1", "database consistent");
    // The next deploy, with the database back, goes through.
    let out = stack.cli(&["deploy", "stall", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(live_body(pg).await?, "select 2");
    Ok(())
}

#[tokio::test]
async fn concurrent_rollouts_to_one_target_are_serialized_and_both_correct() -> Result<()> {
    let stack = Stack::start_with(options("")).await?;
    prepare(&stack).await?;
    stack.write_procedure(
        "other.sql",
        "CREATE OR REPLACE FUNCTION public.other() RETURNS integer LANGUAGE sql AS 'select 3';\n",
    )?;
    let pg = &stack.zone("dev").pg;
    let lock = hold_routine_lock(pg).await?;
    let mut first = stack
        .spawn_cli(&["deploy", "stall", "dev"], "first")
        .await?;
    agent_blocked(pg).await?;
    // The second waits for the first's deploy lock, not for the row lock.
    let mut second = stack
        .spawn_cli(&["deploy", "other", "dev"], "second")
        .await?;
    second.wait_for_line("rollout r-", WAIT).await?;
    let client = pg.connect().await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let advisory_waiters: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                &[],
            )
            .await?
            .get(0);
        if advisory_waiters == 1 {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "second rollout never queued"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let exists: bool = client
        .query_one("SELECT to_regprocedure('public.other()') IS NOT NULL", &[])
        .await?
        .get(0);
    assert!(!exists, "the second rollout waited for the first");
    lock.batch_execute("ROLLBACK").await?;
    assert_eq!(
        first.wait_for_exit(WAIT).await?.code(),
        Some(0),
        "{}",
        first.output_so_far()
    );
    assert_eq!(
        second.wait_for_exit(WAIT).await?.code(),
        Some(0),
        "{}",
        second.output_so_far()
    );
    assert_eq!(live_body(pg).await?, "select 2");
    let other: i32 = client.query_one("SELECT public.other()", &[]).await?.get(0);
    assert_eq!(other, 3);
    Ok(())
}

#[tokio::test]
async fn duplicate_events_and_results_are_recorded_once_and_acknowledged_each_time() -> Result<()> {
    use pgrollout_shared::proto::{
        agent_message::Body, controller_message, Accept, JobEvent, JobResult, Outcome,
    };
    use pgrollout_tests::scripted_agent::{channel, ScriptedAgent};

    let stack = Stack::start_with(StackOptions {
        start_agents: false,
        ..options("")
    })
    .await?;
    let ca = &stack.ca_dir;
    let link = channel(
        &stack.agents_address,
        &ca.join("ca.pem"),
        &ca.join("agent-dev-dev-1.pem"),
        &ca.join("agent-dev-dev-1.key"),
    )
    .await?;
    let mut agent = ScriptedAgent::connect(link, "dev-1", "dev").await?;
    let mut cli = stack
        .spawn_cli(&["deploy", "addarc", "dev"], "deploy")
        .await?;
    let offer = match agent.next(WAIT).await? {
        controller_message::Body::Offer(offer) => offer,
        other => bail!("expected an offer, got {other:?}"),
    };
    let (job_id, attempt) = (offer.job_id.clone(), offer.attempt);
    agent.send(Body::Accept(Accept {
        job_id: job_id.clone(),
        attempt,
    }))?;
    let event = JobEvent {
        job_id: job_id.clone(),
        attempt,
        seq: 1,
        step: "connect".into(),
        status: pgrollout_shared::proto::StepStatus::Succeeded as i32,
        message: "scripted".into(),
        ..Default::default()
    };
    let result = JobResult {
        job_id: job_id.clone(),
        attempt,
        seq: 2,
        outcome: Outcome::Succeeded as i32,
        message: "scripted result".into(),
        ..Default::default()
    };
    for _ in 0..2 {
        agent.send(Body::Event(event.clone()))?;
    }
    for _ in 0..2 {
        agent.send(Body::Result(result.clone()))?;
    }
    let mut acks = Vec::new();
    while acks.len() < 4 {
        match agent.next(WAIT).await? {
            controller_message::Body::Ack(ack) => acks.push(ack.seq),
            other => bail!("expected acks, got {other:?}"),
        }
    }
    assert_eq!(
        acks,
        vec![1, 1, 2, 2],
        "every copy is acknowledged, so the agent can forget it"
    );
    let status = cli.wait_for_exit(WAIT).await?;
    assert_eq!(status.code(), Some(0), "{}", cli.output_so_far());
    let rollout = rollout_id(&cli).await?;
    assert_eq!(state_of(&stack, &rollout).await?, "succeeded");
    let audit = stack.cli(&["audit", "--rollout", &rollout]).await?;
    assert_eq!(audit.stdout.matches("job.finished").count(), 1, "{audit}");
    let events = stack
        .store_rows(
            "SELECT CAST(count(*) AS TEXT) FROM job_events WHERE job_id = $1",
            &[&job_id],
        )
        .await?;
    assert_eq!(
        events[0][0].as_deref(),
        Some("1"),
        "the duplicate event is stored once"
    );
    Ok(())
}

#[tokio::test]
async fn a_controller_stops_on_sigterm_although_agents_hold_their_links_open() -> Result<()> {
    let mut stack = Stack::start(&["dev"]).await?;
    let started = std::time::Instant::now();
    let status = stack.controller.terminate_and_wait().await?;
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        started.elapsed()
    );
    Ok(())
}
