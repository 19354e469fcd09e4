//! Issue 18, item 2 (the agent's side): an agent lists several controllers,
//! holds one stream to one of them, and moves to the next by itself when
//! its controller dies; its journal replays what was not acknowledged there,
//! so a job in flight is recorded once, by whichever controller it reaches.
//!
//! Topology today (one SQLite store): controller B is another `pgrollout
//! serve` on other ports over the same store file, started after A was
//! killed with SIGKILL. Real processes and PostgreSQL throughout.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use pgrollout_tests::http_get::http_request;
use pgrollout_tests::stack::TRUST_DOMAIN;
use pgrollout_tests::stall::{
    agent_blocked, hold_routine_lock, ledger_rollouts, live_body, prepare, rollout_id, state_of,
    AGENT_LOCK_TIMEOUT,
};
use pgrollout_tests::{free_port, Stack, StackOptions};

const WAIT: Duration = Duration::from_secs(30);

/// An address where nothing listens.
fn dead_address() -> String {
    format!("https://127.0.0.1:{}", free_port())
}

/// Points the dev agent at `addresses` (and a `[health]` listener on the
/// returned port) and restarts it; returns once it is connected.
async fn restart_agent_listing(stack: &mut Stack, addresses: &[&str]) -> Result<u16> {
    stack.list_controllers("dev", addresses)?;
    let health = free_port();
    let path = stack.zone("dev").agent_config.clone();
    let mut text = std::fs::read_to_string(&path)?;
    text.push_str(&format!("\n[health]\nlisten = \"127.0.0.1:{health}\"\n"));
    std::fs::write(&path, text)?;
    stack.kill_agent("dev").await?;
    stack.start_agent("dev").await?;
    Ok(health)
}

/// One sample of the agent's `/metrics`, as its line reads.
async fn metric_line(port: u16, series: &str) -> Result<String> {
    let (head, body) = http_request(port, "GET", "/metrics").await?;
    ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.lines()
        .find(|line| line.starts_with(series))
        .map(str::to_owned)
        .with_context(|| format!("no {series} in:\n{body}"))
}

async fn journal_settled(stack: &Stack) -> Result<()> {
    stack.journal_settled("dev").await
}

#[tokio::test]
async fn a_job_in_flight_when_its_controller_is_killed_is_recorded_once_by_the_next() -> Result<()>
{
    let mut stack = Stack::start_with(StackOptions {
        agent_timeouts: AGENT_LOCK_TIMEOUT.into(),
        ..StackOptions::default()
    })
    .await?;
    let a = stack.agents_address.clone();
    let b = stack.other_controller("b")?;
    let health = restart_agent_listing(&mut stack, &[&a, &b.agents]).await?;
    assert!(
        stack
            .agent("dev")?
            .wait_for_line("connected to controller", WAIT)
            .await?
            .contains(&a),
        "the agent starts with the first address"
    );

    // A deploy through A, then one whose apply waits on the test's lock.
    prepare(&stack).await?;
    let lock = hold_routine_lock(&stack.zone("dev").pg).await?;
    let mut cli = stack
        .spawn_cli(&["deploy", "stall", "dev"], "deploy")
        .await?;
    let rollout = rollout_id(&cli).await?;
    agent_blocked(&stack.zone("dev").pg).await?;

    let mark = stack.agent("dev")?.mark();
    stack.kill_9_controller().await?;
    stack.start_controller(&b, "controller-b").await?;
    let connected = stack
        .agent("dev")?
        .wait_for_line_after(mark, "connected to controller", WAIT)
        .await?;
    assert!(connected.contains(&b.agents), "{connected}");
    // The operator's stream died with A; the CLI says where to look.
    let exit = cli.wait_for_exit(WAIT).await?;
    assert_ne!(exit.code(), Some(0), "{}", cli.output_so_far());
    assert!(
        cli.output_so_far()
            .contains(&format!("pgrollout status {rollout}")),
        "{}",
        cli.output_so_far()
    );
    // The job kept running through the change of controller: its apply
    // still waits on the lock, in the same transaction.
    agent_blocked(&stack.zone("dev").pg).await?;
    assert_eq!(live_body(&stack.zone("dev").pg).await?, "select 1");

    let on_b = stack.controller.mark();
    lock.batch_execute("ROLLBACK").await?;
    stack
        .controller
        .wait_for_line_after(on_b, "job result recorded", WAIT)
        .await?;

    // The CLI, now pointed at B, reports the outcome.
    assert_eq!(state_of(&stack, &rollout).await?, "succeeded");
    let history = stack
        .cli(&["history", "stall", "dev", "--output", "json"])
        .await?;
    assert_eq!(history.code, 0, "{history}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&history.stdout)?;
    let rows_of_rollout = entries
        .iter()
        .filter(|e| e["rollout_id"] == rollout.as_str())
        .count();
    assert_eq!(rows_of_rollout, 1, "{history}");
    // The database has the change exactly once.
    let pg = &stack.zone("dev").pg;
    assert_eq!(live_body(pg).await?, "select 2");
    let rows = ledger_rollouts(pg).await?;
    assert_eq!(
        rows.iter().filter(|r| **r == rollout).count(),
        1,
        "exactly one ledger row: {rows:?}"
    );
    // Recorded once: one job.finished entry for the rollout, whoever saw it.
    let finished = stack
        .audit_entries()
        .await?
        .into_iter()
        .filter(|e| e["action"] == "job.finished" && e["rollout_id"] == rollout.as_str())
        .count();
    assert_eq!(finished, 1, "one job.finished entry naming the rollout");
    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_eq!(verify.code, 0, "{verify}");

    // The agent says which controller it is on.
    let line = metric_line(health, "pgrollout_agent_controller{").await?;
    assert_eq!(
        line,
        format!("pgrollout_agent_controller{{address=\"{}\"}} 1", b.agents)
    );
    let line = metric_line(health, "pgrollout_agent_controller_failovers_total").await?;
    assert_eq!(line, "pgrollout_agent_controller_failovers_total 1");
    Ok(())
}

#[tokio::test]
async fn a_result_journaled_while_no_controller_was_up_is_replayed_to_the_next() -> Result<()> {
    let mut stack = Stack::start_with(StackOptions {
        agent_timeouts: format!("{AGENT_LOCK_TIMEOUT}\nreconnect_max = \"2s\""),
        ..StackOptions::default()
    })
    .await?;
    let a = stack.agents_address.clone();
    let b = stack.other_controller("b")?;
    restart_agent_listing(&mut stack, &[&a, &b.agents]).await?;
    prepare(&stack).await?;
    let lock = hold_routine_lock(&stack.zone("dev").pg).await?;
    let cli = stack
        .spawn_cli(&["deploy", "stall", "dev"], "deploy")
        .await?;
    let rollout = rollout_id(&cli).await?;
    agent_blocked(&stack.zone("dev").pg).await?;

    // A dies; the job finishes with no controller up: every step after the
    // apply and the result wait in the agent's journal.
    let mark = stack.agent("dev")?.mark();
    stack.kill_9_controller().await?;
    lock.batch_execute("ROLLBACK").await?;
    stack
        .agent("dev")?
        .wait_for_line_after(mark, "job finished", WAIT)
        .await?;
    assert_eq!(live_body(&stack.zone("dev").pg).await?, "select 2");

    let mark = stack.agent("dev")?.mark();
    stack.start_controller(&b, "controller-b").await?;
    let connected = stack
        .agent("dev")?
        .wait_for_line_after(mark, "connected to controller", WAIT)
        .await?;
    assert!(connected.contains(&b.agents), "{connected}");
    stack
        .controller
        .wait_for_line("job result recorded", WAIT)
        .await?;
    assert_eq!(state_of(&stack, &rollout).await?, "succeeded");
    // B acknowledged every event the job streamed while no controller
    // listened, and its result: the agent's journal lets them all go.
    journal_settled(&stack).await?;
    let finished = stack
        .audit_entries()
        .await?
        .into_iter()
        .filter(|e| e["action"] == "job.finished" && e["rollout_id"] == rollout.as_str())
        .count();
    assert_eq!(finished, 1, "one job.finished entry naming the rollout");
    let rows = ledger_rollouts(&stack.zone("dev").pg).await?;
    assert_eq!(
        rows.iter().filter(|r| **r == rollout).count(),
        1,
        "{rows:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_agent_whose_first_controller_is_dead_from_the_start_uses_the_next() -> Result<()> {
    let mut stack = Stack::start(&["dev"]).await?;
    let dead = dead_address();
    let live = stack.agents_address.clone();
    restart_agent_listing(&mut stack, &[&dead, &live]).await?;
    let agent = stack.agent("dev")?;
    let connected = agent.wait_for_line("connected to controller", WAIT).await?;
    assert!(connected.contains(&live), "{connected}");
    let refused = agent.wait_for_line("link to controller lost", WAIT).await?;
    assert!(
        refused.contains(&dead) && refused.contains("retry_in_ms=0"),
        "a dead address costs no backoff when another is left in the round: {refused}"
    );

    prepare(&stack).await?;
    let rows = ledger_rollouts(&stack.zone("dev").pg).await?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    Ok(())
}

#[tokio::test]
async fn an_agent_refused_by_one_controller_uses_the_next() -> Result<()> {
    let mut stack = Stack::start(&["dev"]).await?;
    // A controller of its own store that has revoked the agent: it refuses
    // it (PermissionDenied), which alone would stop a one-address agent.
    let refusing = stack.other_controller("refusing")?;
    let text = std::fs::read_to_string(&refusing.config)?;
    let store = stack.dir.path().join("controller.sqlite");
    let own_store = stack.dir.path().join("refusing.sqlite");
    std::fs::write(
        &refusing.config,
        format!(
            "{}[security]\nrevoked = [\"spiffe://{TRUST_DOMAIN}/zone/dev/agent/dev-1\"]\n",
            text.replace(&*store.to_string_lossy(), &own_store.to_string_lossy())
        ),
    )?;
    let refuser = stack
        .spawn_controller(&refusing, "controller-refusing")
        .await?;
    let accepting = stack.agents_address.clone();
    restart_agent_listing(&mut stack, &[&refusing.agents, &accepting]).await?;
    let agent = stack.agent("dev")?;
    let connected = agent.wait_for_line("connected to controller", WAIT).await?;
    assert!(connected.contains(&accepting), "{connected}");
    let refused = agent.wait_for_line("link to controller lost", WAIT).await?;
    assert!(
        refused.contains(&refusing.agents) && refused.contains("refused this agent"),
        "{refused}"
    );
    refuser
        .wait_for_line("agent rejected", WAIT)
        .await
        .context("the refusing controller never saw the agent")?;
    prepare(&stack).await?;
    let rows = ledger_rollouts(&stack.zone("dev").pg).await?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    Ok(())
}

#[tokio::test]
async fn an_agent_whose_controllers_are_all_down_connects_when_one_comes_up() -> Result<()> {
    let reconnect_max = Duration::from_secs(2);
    let mut stack = Stack::start_with(StackOptions {
        agent_timeouts: format!("reconnect_max = \"{}s\"", reconnect_max.as_secs()),
        ..StackOptions::default()
    })
    .await?;
    let b = stack.other_controller("b")?;
    let dead = dead_address();
    stack.list_controllers("dev", &[&dead, &b.agents])?;
    stack.kill_agent("dev").await?;
    stack.kill_9_controller().await?;

    stack.spawn_agent("dev")?;
    // Several whole rounds fail: the backoff reaches its bound.
    for _ in 0..6 {
        let agent = stack.agent("dev")?;
        let mark = agent.mark();
        agent
            .wait_for_line_after(mark, "link to controller lost", WAIT)
            .await?;
    }
    let mark = stack.agent("dev")?.mark();
    stack.start_controller(&b, "controller-b").await?;
    let up = Instant::now();
    let connected = stack
        .agent("dev")?
        .wait_for_line_after(mark, "connected to controller", WAIT)
        .await?;
    let took = up.elapsed();
    assert!(connected.contains(&b.agents), "{connected}");
    // One backoff (at most reconnect_max) and one round: the dead address
    // is refused at once, B answers. The slack covers the TLS handshake on
    // a loaded machine.
    eprintln!("connected {took:?} after B listened (reconnect_max {reconnect_max:?})");
    assert!(
        took < reconnect_max + Duration::from_secs(3),
        "connected only {took:?} after B listened"
    );
    prepare(&stack).await?;
    Ok(())
}
