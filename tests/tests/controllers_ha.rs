//! Several controllers on one PostgreSQL store (issue 18, item 2), as real
//! processes: each controller registers itself in the store and claims the
//! jobs it offers; a controller starting beside a live one leaves that
//! one's job in flight alone, and a controller that dies has its jobs
//! settled by a live one once its heartbeat expires.
//!
//! The job in flight is the `stall` deploy, held at its apply by a row lock
//! the test holds (see `pgrollout_tests::stall`).

use std::time::Duration;

use anyhow::{Context, Result};
use pgrollout_tests::stall::{
    agent_blocked, hold_routine_lock, ledger_rollouts, prepare, rollout_id, state_of,
    AGENT_LOCK_TIMEOUT,
};
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::{free_port, window_from_now, PgCluster, Process, Stack, StackOptions};

const WAIT: Duration = Duration::from_secs(30);

/// A stack whose controller runs on `store`, its agents waiting on locks
/// long enough for the stalled apply.
async fn stack_on(store: &PgCluster) -> Result<Stack> {
    Stack::start_with(StackOptions {
        agent_timeouts: AGENT_LOCK_TIMEOUT.into(),
        store_url: Some(store.url()),
        ..StackOptions::default()
    })
    .await
}

/// Starts a second controller on the stack's store: the same config on
/// listen ports of its own. Returns once its start-up recovery is done.
async fn second_controller(stack: &Stack) -> Result<Process> {
    let config = std::fs::read_to_string(stack.controller_config_path())?;
    let operators = stack
        .operators
        .rsplit_once("://")
        .map_or(stack.operators.as_str(), |(_, address)| address)
        .to_owned();
    let agents = format!("127.0.0.1:{}", stack.agents_port());
    anyhow::ensure!(config.contains(&operators) && config.contains(&agents));
    let config = config
        .replace(&operators, &format!("127.0.0.1:{}", free_port()))
        .replace(&agents, &format!("127.0.0.1:{}", free_port()));
    let path = stack.dir.path().join("controller-b.toml");
    std::fs::write(&path, config)?;
    let path = path.to_string_lossy().to_string();
    let mut args = vec!["serve", "--config", &path];
    if stack.plaintext {
        args.push("--dev-plaintext");
    }
    let controller = Process::spawn(&stack.bins.controller, args, &[], "controller-b")?;
    controller
        .wait_for_line("start-up recovery done", WAIT)
        .await?;
    Ok(controller)
}

/// The state of a rollout's job and the controller recorded as its own, as
/// an operator reads them from the store with psql.
async fn job_row(store: &Client, rollout: &str) -> Result<(String, Option<String>)> {
    let row = store
        .query_one(
            "SELECT state, controller_id FROM jobs WHERE rollout_id = $1",
            &[&rollout],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

#[tokio::test]
async fn a_controller_starting_beside_a_live_one_leaves_its_job_in_flight_alone() -> Result<()> {
    let store = PgCluster::start("store").await?;
    let stack = stack_on(&store).await?;
    prepare(&stack).await?;
    let pg = &stack.zone("dev").pg;
    let lock = hold_routine_lock(pg).await?;
    let mut cli = stack
        .spawn_cli(&["deploy", "stall", "dev"], "deploy")
        .await?;
    let rollout = rollout_id(&cli).await?;
    agent_blocked(pg).await?;

    let _b = second_controller(&stack).await?;
    let client = store.connect().await?;
    let (state, owner) = job_row(&client, &rollout).await?;
    assert_eq!(
        state, "running",
        "the first controller's job is still its own"
    );
    let operators_port = stack.operators.rsplit(':').next().context("port")?;
    assert!(
        owner
            .as_deref()
            .is_some_and(|o| o.ends_with(&format!(":{operators_port}"))),
        "the job names the controller that offered it: {owner:?}"
    );
    assert_eq!(state_of(&stack, &rollout).await?, "running");

    // The apply goes on; the first controller follows it to the end.
    lock.batch_execute("ROLLBACK").await?;
    let status = cli.wait_for_exit(WAIT).await?;
    assert_eq!(status.code(), Some(0), "{}", cli.output_so_far());
    assert_eq!(state_of(&stack, &rollout).await?, "succeeded");
    let applied = ledger_rollouts(pg).await?;
    assert_eq!(
        applied.iter().filter(|r| **r == rollout).count(),
        1,
        "the ledger has the deploy once: {applied:?}"
    );
    let interrupted = stack
        .audit_entries()
        .await?
        .into_iter()
        .filter(|e| e["action"] == "job.interrupted")
        .count();
    assert_eq!(interrupted, 0, "nobody declared the job in doubt");
    Ok(())
}

#[tokio::test]
async fn a_live_controller_settles_the_job_of_one_killed_once_its_heartbeat_expires() -> Result<()>
{
    let store = PgCluster::start("store").await?;
    let mut stack = stack_on(&store).await?;
    prepare(&stack).await?;
    let pg = &stack.zone("dev").pg;
    let _lock = hold_routine_lock(pg).await?;
    let cli = stack
        .spawn_cli(&["deploy", "stall", "dev"], "deploy")
        .await?;
    let rollout = rollout_id(&cli).await?;
    agent_blocked(pg).await?;
    let b = second_controller(&stack).await?;
    let mark = b.mark();

    stack.controller.kill_9()?;
    stack.controller.wait_for_exit(WAIT).await?;
    // Nobody follows the job now: the live controller settles it, once.
    b.wait_for_line_after(mark, "job in doubt", WAIT).await?;
    let client = store.connect().await?;
    let (state, _) = job_row(&client, &rollout).await?;
    assert_eq!(state, "unknown");
    let rollout_state: String = client
        .query_one("SELECT state FROM rollouts WHERE id = $1", &[&rollout])
        .await?
        .get(0);
    assert_eq!(rollout_state, "unknown");
    let audited: i64 = client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'job.interrupted' AND rollout_id = $1",
            &[&rollout],
        )
        .await?
        .get(0);
    assert_eq!(audited, 1, "settled and audited once");
    Ok(())
}

/// A request's state and the controller that claimed its start, as an
/// operator reads them from the store with psql.
async fn request_row(store: &Client, request: &str) -> Result<(String, Option<String>)> {
    let row = store
        .query_one(
            "SELECT state, started_by FROM pending_rollouts WHERE request_id = $1",
            &[&request],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// A stack on `store` with a deploy scheduled for dev's closed window; the
/// zone's agent is then stopped and the window opened (the controller
/// reloads its changed config): the scheduler claims the request's start
/// and waits, up to a minute, for an agent. Returns once the request is
/// `starting`.
async fn request_starting(store: &PgCluster, client: &Client) -> Result<(Stack, String)> {
    let closed = window_from_now(12 * 60, 1)?;
    let mut stack = Stack::start_with(StackOptions {
        store_url: Some(store.url()),
        environment_extra: vec![("dev".into(), format!("maintenance_window = \"{closed}\""))],
        deployment_extra: "max_agent_wait = \"60s\"".into(),
        ..StackOptions::default()
    })
    .await?;
    let out = stack.cli(&["deploy", "addarc", "dev"]).await?;
    anyhow::ensure!(out.code == 0, "{out}");
    let id = out.request_id()?;
    stack.kill_agent("dev").await?;
    let path = stack.controller_config_path();
    let config = std::fs::read_to_string(&path)?;
    anyhow::ensure!(config.contains(&closed), "{config}");
    std::fs::write(&path, config.replace(&closed, &window_from_now(-1, 10)?))?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while request_row(client, &id).await?.0 != "starting" {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the request never started: {}",
            stack.controller.output_so_far()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((stack, id))
}

#[tokio::test]
async fn a_request_a_live_controller_is_starting_is_left_alone_until_that_controller_dies(
) -> Result<()> {
    let store = PgCluster::start("store").await?;
    let client = store.connect().await?;
    let (mut stack, id) = request_starting(&store, &client).await?;

    // Another controller starts while the first waits for an agent: the
    // request is the first one's to start, and stays so.
    let b = second_controller(&stack).await?;
    let (state, starter) = request_row(&client, &id).await?;
    assert_eq!(state, "starting");
    let operators_port = stack.operators.rsplit(':').next().context("port")?;
    let a_port = format!(":{operators_port}");
    assert!(
        starter.as_deref().is_some_and(|s| s.ends_with(&a_port)),
        "the request names the controller starting it: {starter:?}"
    );

    // Once that controller is dead, the live one settles the request: no
    // rollout was recorded, so it is evaluated again — once.
    let mark = b.mark();
    stack.controller.kill_9()?;
    stack.controller.wait_for_exit(WAIT).await?;
    b.wait_for_line_after(mark, "interrupted start settled: scheduled again", WAIT)
        .await?;
    let settled = b
        .output_so_far()
        .matches("interrupted start settled")
        .count();
    assert_eq!(
        settled,
        1,
        "settled once, after its controller died: {}",
        b.output_so_far()
    );
    let (state, starter) = request_row(&client, &id).await?;
    assert!(
        state == "scheduled" || !starter.as_deref().is_some_and(|s| s.ends_with(&a_port)),
        "no longer the dead controller's: {state} {starter:?}"
    );
    Ok(())
}
