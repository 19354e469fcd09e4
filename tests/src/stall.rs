//! A deploy stalled at a known point: the apply step of `stall()` v2 waits
//! on a row lock the test holds on the routine's `pg_proc` row (an
//! uncommitted `ALTER FUNCTION`), so a fault or a signal lands inside the
//! agent's open transaction, after the backup.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio_postgres::Client;

use crate::{PgCluster, Process, Stack};

const WAIT: Duration = Duration::from_secs(30);
pub const V1: &str =
    "CREATE OR REPLACE FUNCTION public.stall() RETURNS integer LANGUAGE sql AS 'select 1';\n";
pub const V2: &str =
    "CREATE OR REPLACE FUNCTION public.stall() RETURNS integer LANGUAGE sql AS 'select 2';\n";

/// An agent's `[timeouts]` line long enough that the stalled apply waits on
/// the test's lock.
pub const AGENT_LOCK_TIMEOUT: &str = "lock = \"60s\"";

/// Deploys `stall` v1, then puts v2 in the project: the next deploy changes it.
pub async fn prepare(stack: &Stack) -> Result<()> {
    stack.write_procedure("stall.sql", V1)?;
    let out = stack.cli(&["deploy", "stall", "dev"]).await?;
    anyhow::ensure!(out.code == 0, "first deploy: {out}");
    stack.write_procedure("stall.sql", V2)?;
    Ok(())
}

/// Holds a row lock on `stall()`'s catalog row until the returned client
/// rolls back: a concurrent CREATE OR REPLACE of it waits (had the holder
/// committed, the waiter would fail with "tuple concurrently updated").
pub async fn hold_routine_lock(pg: &PgCluster) -> Result<Client> {
    let client = pg.connect().await?;
    client
        .batch_execute("BEGIN; ALTER FUNCTION public.stall() COST 7;")
        .await?;
    Ok(client)
}

/// Waits until the agent's session is blocked on a lock (the stalled apply).
pub async fn agent_blocked(pg: &PgCluster) -> Result<()> {
    let client = pg.connect().await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgrollout' AND wait_event_type = 'Lock'",
                &[],
            )
            .await?
            .get(0);
        if waiting > 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the agent never blocked on the test's lock");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The rollout id from the CLI's "rollout r-… on agent …" line.
pub async fn rollout_id(cli: &Process) -> Result<String> {
    let line = cli.wait_for_line("rollout r-", WAIT).await?;
    line.split_whitespace()
        .find(|word| word.starts_with("r-"))
        .map(str::to_owned)
        .context("no rollout id in the CLI's line")
}

/// The body `stall()` has in the catalog now.
pub async fn live_body(pg: &PgCluster) -> Result<String> {
    Ok(pg
        .connect()
        .await?
        .query_one("SELECT prosrc FROM pg_proc WHERE proname = 'stall'", &[])
        .await?
        .get(0))
}

/// Ledger rows of `stall()` per rollout, oldest first.
pub async fn ledger_rollouts(pg: &PgCluster) -> Result<Vec<String>> {
    let rows = pg
        .connect()
        .await?
        .query(
            "SELECT rollout_id FROM pgrollout.ledger WHERE identity = 'public.stall()' ORDER BY id",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// A rollout's state as `pgrollout status` prints it.
pub async fn state_of(stack: &Stack, rollout: &str) -> Result<String> {
    let out = stack.cli(&["status", rollout]).await?;
    anyhow::ensure!(out.code == 0, "status: {out}");
    out.stdout
        .lines()
        .find_map(|line| line.strip_prefix("State: "))
        .map(str::to_owned)
        .context("no State line")
}
