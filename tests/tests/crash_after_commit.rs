//! An agent killed with SIGKILL after its deploy committed, while the
//! post-commit smoke test runs (issue 16, item 6). Its restart settles the
//! rollout from the target's ledger; then `log` shows the verified backup the
//! job wrote and what is known of its smoke tests — not "Backup: none",
//! "NOT RUN" or "nothing changed" — and the next environment's
//! `tests_passed` gate refuses the plan: its smoke tests never completed.
//!
//! The post-commit smoke test is held at a known point by an advisory lock
//! the test holds: the smoke call's helper waits for it only outside the
//! deploy's transaction (the session holding the deploy's advisory lock).

use std::time::Duration;

use anyhow::{bail, Result};
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::{PgCluster, Stack, StackOptions};

const WAIT: Duration = Duration::from_secs(30);
const V1: &str =
    "CREATE OR REPLACE FUNCTION public.stall() RETURNS integer LANGUAGE sql AS 'select 1';\n";
const V2: &str =
    "CREATE OR REPLACE FUNCTION public.stall() RETURNS integer LANGUAGE sql AS 'select 2';\n";
const SIDECAR: &str = "[[smoke_tests]]\nname = \"waits for the test after commit\"\n\
                       call = \"SELECT public.stall_after_commit()\"\n";
const HELPER: &str = "CREATE FUNCTION public.stall_after_commit() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted) THEN
    PERFORM pg_advisory_xact_lock(4242);
  END IF;
  RETURN true;
END $$";

/// Waits until an agent session waits on a lock (the post-commit smoke).
async fn agent_waiting(pg: &PgCluster) -> Result<()> {
    let client = pg.connect().await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgrollout' \
                 AND wait_event_type = 'Lock'",
                &[],
            )
            .await?
            .get(0);
        if waiting > 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the post-commit smoke test never waited on the test's lock");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn holding_4242(pg: &PgCluster) -> Result<Client> {
    let client = pg.connect().await?;
    client
        .batch_execute("SELECT pg_advisory_lock(4242)")
        .await?;
    Ok(client)
}

#[tokio::test]
async fn a_deploy_settled_from_the_ledger_after_commit_shows_its_backup_and_is_not_tested(
) -> Result<()> {
    let mut stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into(), "qa".into()],
        deployment_extra: "job_lease = \"2s\"".into(),
        environment_extra: vec![(
            "qa".into(),
            "promote_from = \"dev\"\ngates = [\"tests_passed\"]".into(),
        )],
        ..StackOptions::default()
    })
    .await?;
    stack
        .zone("dev")
        .pg
        .connect()
        .await?
        .batch_execute(HELPER)
        .await?;
    stack.write_procedure("stall.sql", V1)?;
    stack.write_procedure("stall.toml", SIDECAR)?;
    let first = stack.cli(&["deploy", "stall", "dev"]).await?;
    assert_eq!(first.code, 0, "{first}");
    stack.write_procedure("stall.sql", V2)?;

    let lock = holding_4242(&stack.zone("dev").pg).await?;
    let mut cli = stack
        .spawn_cli(&["deploy", "stall", "dev"], "deploy")
        .await?;
    agent_waiting(&stack.zone("dev").pg).await?;
    stack.kill_agent("dev").await?;
    let exit = cli.wait_for_exit(WAIT).await?;
    assert_eq!(exit.code(), Some(2), "{}", cli.output_so_far());
    let rollout = cli
        .output_so_far()
        .split_whitespace()
        .find(|w| w.starts_with("r-"))
        .map(str::to_owned)
        .unwrap_or_default();
    // The post-commit session goes once it gets the lock and finds its client gone.
    lock.batch_execute("SELECT pg_advisory_unlock(4242)")
        .await?;

    let mark = stack.controller.mark();
    stack.start_agent("dev").await?;
    stack
        .controller
        .wait_for_line_after(mark, "job result recorded", WAIT)
        .await?;

    let log = stack.cli(&["log", &rollout]).await?;
    assert_eq!(log.code, 0, "{log}");
    let backup = log
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Backup: "))
        .unwrap_or_default();
    let path = backup.split(" (sha256 ").next().unwrap_or_default();
    assert!(
        !path.is_empty() && path != "none" && std::path::Path::new(path).is_file(),
        "the job's verified backup, which exists: {log}"
    );
    assert!(
        log.stdout
            .contains("INCOMPLETE — the smoke tests in the transaction passed"),
        "{log}"
    );
    assert!(
        log.stdout
            .contains("post-commit smoke test never completed"),
        "{log}"
    );
    assert!(!log.stdout.contains("NOT RUN"), "{log}");
    assert!(!log.stdout.contains("nothing changed"), "{log}");
    assert!(
        log.stdout.contains("Routines: public.stall() [replaced]"),
        "the ledger's change: {log}"
    );
    assert!(log.stdout.contains("SUCCESS (committed;"), "{log}");

    // QA's tests_passed gate: a rollout whose post-commit smoke never
    // completed has not passed its smoke tests.
    let qa = stack.cli(&["deploy", "stall", "qa"]).await?;
    assert_eq!(qa.code, 1, "{qa}");
    assert!(
        qa.stderr.contains("gate tests_passed refused: plan ")
            && qa.stderr.contains(&format!(
            "succeeded in dev (rollout {rollout}) but its post-commit smoke test never completed"
        )),
        "{qa}"
    );
    Ok(())
}
