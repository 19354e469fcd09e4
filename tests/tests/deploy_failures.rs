//! Deploys that must fail, and how: exit code, message, and a database left
//! exactly as it was — with no rows left behind by smoke calls.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::{free_port, Stack, StackOptions};

const SIGNATURE: &str = "public.probe(integer)";

/// A function whose every call leaves a row in `probe_calls`, so a smoke test
/// that was not rolled back would show.
fn probe_sql(body_extra: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION public.probe(p integer)\nRETURNS TABLE (n integer)\nLANGUAGE plpgsql AS $$\nBEGIN\n  \
         INSERT INTO public.probe_calls VALUES (p);\n  {body_extra}\n  RETURN QUERY SELECT p;\nEND\n$$;\n"
    )
}

fn probe_sidecar(max_duration: &str, column_type: &str) -> String {
    format!(
        "[[smoke_tests]]\nname = \"returns its argument\"\ncall = \"SELECT * FROM public.probe(7)\"\n\
         max_duration = \"{max_duration}\"\nexpect_columns = [ {{ name = \"n\", type = \"{column_type}\" }} ]\n"
    )
}

async fn definition(client: &Client) -> Result<Option<String>> {
    Ok(client
        .query_one(
            "SELECT pg_get_functiondef(to_regprocedure($1))",
            &[&SIGNATURE],
        )
        .await?
        .get(0))
}

async fn probe_rows(client: &Client) -> Result<i64> {
    Ok(client
        .query_one("SELECT count(*) FROM public.probe_calls", &[])
        .await?
        .get(0))
}

/// A stack whose project holds v1 of `probe` (not yet deployed), and a
/// client of its database, which has the `probe_calls` table.
async fn probe_stack() -> Result<(Stack, Client)> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client
        .batch_execute("CREATE TABLE public.probe_calls (p integer)")
        .await?;
    stack.write_procedure("probe.sql", &probe_sql("-- v1"))?;
    stack.write_procedure("probe.toml", &probe_sidecar("2s", "integer"))?;
    Ok((stack, client))
}

#[tokio::test]
async fn every_kind_of_smoke_failure_exits_3_and_leaves_the_previous_version_live() -> Result<()> {
    let (stack, client) = probe_stack().await?;
    let out = stack.cli(&["deploy", "probe", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let v1 = definition(&client).await?.context("v1 live")?;
    assert_eq!(
        probe_rows(&client).await?,
        0,
        "passing smoke calls leave nothing behind"
    );

    let cases = [
        (
            "an exception",
            probe_sql("RAISE EXCEPTION 'probe is broken' USING ERRCODE = 'P0001';"),
            probe_sidecar("2s", "integer"),
            "[FAIL] Can execute (test data): ERROR P0001: probe is broken",
        ),
        (
            "over the time bound",
            probe_sql("PERFORM pg_sleep(1.5);"),
            probe_sidecar("300ms", "integer"),
            "[FAIL] Execution time: over the bound 300ms",
        ),
        (
            "a warning",
            probe_sql("RAISE WARNING 'probe is degraded';"),
            probe_sidecar("2s", "integer"),
            "[FAIL] No errors detected: WARNING raised: probe is degraded",
        ),
        (
            "the wrong columns",
            probe_sql("-- v2"),
            probe_sidecar("2s", "bigint"),
            "[FAIL] Returns correct structure: column 1 is n int4, expected n bigint",
        ),
    ];
    for (case, sql, sidecar, expected) in cases {
        stack.write_procedure("probe.sql", &sql)?;
        stack.write_procedure("probe.toml", &sidecar)?;
        let out = stack.cli(&["deploy", "probe", "dev"]).await?;
        assert_eq!(out.code, 3, "{case}: {out}");
        assert!(
            out.stdout.contains(expected),
            "{case}: expected {expected:?} in:\n{out}"
        );
        assert!(
            out.stdout.contains("Status: [FAIL] FAILED (exit 3)"),
            "{case}: {out}"
        );
        assert!(
            out.stderr.contains("nothing was committed"),
            "{case}: {out}"
        );
        assert_eq!(
            definition(&client).await?.as_deref(),
            Some(v1.as_str()),
            "{case}: v1 still live"
        );
        assert_eq!(
            probe_rows(&client).await?,
            0,
            "{case}: the smoke call left no rows"
        );
    }
    let ledger_rows: i64 = client
        .query_one(
            "SELECT count(*) FROM pgrollout.ledger WHERE identity = 'public.probe(integer)'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(ledger_rows, 1, "failed deploys left no ledger rows");
    Ok(())
}

/// Issue 15 turned this refusal into DROP + CREATE (the whole lifecycle is in
/// `routine_lifecycle.rs`): a table function's new column type deploys, and
/// its smoke test checks the new structure.
#[tokio::test]
async fn a_change_of_return_type_is_applied_as_drop_and_create() -> Result<()> {
    let (stack, client) = probe_stack().await?;
    assert_eq!(stack.cli(&["deploy", "probe", "dev"]).await?.code, 0);
    let v1 = definition(&client).await?;

    stack.write_procedure("probe.toml", &probe_sidecar("2s", "bigint"))?;
    stack.write_procedure(
        "probe.sql",
        &probe_sql("")
            .replace("RETURNS TABLE (n integer)", "RETURNS TABLE (n bigint)")
            .replace("SELECT p;", "SELECT p::bigint;"),
    )?;
    let out = stack.cli(&["deploy", "probe", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("by DROP + CREATE"), "{out}");
    let v2 = definition(&client).await?.unwrap_or_default();
    assert_ne!(Some(v2.clone()), v1);
    assert!(v2.contains("n bigint"), "{v2}");
    Ok(())
}

#[tokio::test]
async fn an_unreachable_database_fails_with_exit_2_in_bounded_time() -> Result<()> {
    let mut stack = Stack::start_with(StackOptions {
        start_agents: false,
        agent_timeouts: "connect = \"2s\"".into(),
        ..StackOptions::default()
    })
    .await?;
    // Point the agent at a port where nothing listens.
    let zone = stack.zone("dev");
    let config = std::fs::read_to_string(&zone.agent_config)?;
    let dead_port = free_port();
    std::fs::write(
        &zone.agent_config,
        config.replace(
            &format!("port = {}", zone.pg.port()),
            &format!("port = {dead_port}"),
        ),
    )?;
    stack.start_agent("dev").await?;

    let started = Instant::now();
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(out.stdout.contains("[FAIL] connect"), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "cannot connect to target main (postgres@127.0.0.1:{dead_port}/"
        )),
        "{out}"
    );
    assert!(!out.stderr.contains(stack.zone("dev").pg.password()));
    Ok(())
}

#[tokio::test]
async fn no_agent_for_the_zone_fails_with_exit_2_and_says_what_to_do() -> Result<()> {
    let stack = Stack::start_with(StackOptions {
        start_agents: false,
        ..StackOptions::default()
    })
    .await?;
    let started = Instant::now();
    let out = stack
        .cli(&["deploy", "reconcilemupstream", "dev", "--agent-wait", "1s"])
        .await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        out.stderr.contains("no agent connected for zone dev"),
        "{out}"
    );
    assert!(
        out.stderr.contains("start pgrollout-agent in that zone"),
        "{out}"
    );

    let out = stack.cli(&["agents"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout.trim(), "no agents connected");
    Ok(())
}

#[tokio::test]
async fn an_unreachable_controller_fails_with_exit_2() -> Result<()> {
    let stack = Stack::start_with(StackOptions {
        start_agents: false,
        ..StackOptions::default()
    })
    .await?;
    let out = stack
        .bins
        .run_cli(
            [
                "deploy",
                "reconcilemupstream",
                "dev",
                "--project",
                &stack.project.to_string_lossy(),
            ],
            &[(
                "PGROLLOUT_ADDR",
                &format!("http://127.0.0.1:{}", free_port()),
            )],
        )
        .await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("cannot reach the controller"), "{out}");
    Ok(())
}

/// The backup file is written while the CREATEs run (issue 15, item 9):
/// when it cannot be written, what the CREATEs did is rolled back — the
/// previous version stays live, no ledger row, exit 2.
#[tokio::test]
async fn a_backup_that_cannot_be_written_rolls_the_deploy_back_and_exits_2() -> Result<()> {
    let (stack, client) = probe_stack().await?;
    assert_eq!(stack.cli(&["deploy", "probe", "dev"]).await?.code, 0);
    let v1 = definition(&client).await?.context("v1 live")?;

    // The target's backup directory becomes a file: no backup can go there.
    let target_dir = stack.zone("dev").backup_dir.join("main");
    std::fs::remove_dir_all(&target_dir).context("the first deploy's backups")?;
    std::fs::write(&target_dir, "not a directory")?;
    stack.write_procedure("probe.sql", &probe_sql("-- v2"))?;
    let out = stack.cli(&["deploy", "probe", "dev"]).await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stdout.contains("[FAIL] backup"), "{out}");
    assert!(!out.stdout.contains("[ok] commit"), "{out}");
    assert!(
        out.stderr.contains("backup failed, nothing was changed"),
        "{out}"
    );
    assert_eq!(
        definition(&client).await?.as_deref(),
        Some(v1.as_str()),
        "v1 is still live"
    );
    let rows: i64 = client
        .query_one("SELECT count(*) FROM pgrollout.ledger", &[])
        .await?
        .get(0);
    assert_eq!(rows, 1, "only the first deploy's row");
    Ok(())
}

#[tokio::test]
async fn a_failing_post_commit_smoke_test_restores_the_backup_and_exits_3() -> Result<()> {
    let (stack, client) = probe_stack().await?;
    assert_eq!(stack.cli(&["deploy", "probe", "dev"]).await?.code, 0);
    let v1 = definition(&client).await?.context("v1 live")?;

    // Passes on the deploy's connection (which holds the deploy's advisory
    // lock) and fails on the fresh post-commit connection, which does not.
    // (Every agent transaction now has an xid: its seal, see txn_seal.)
    stack.write_procedure(
        "probe.sql",
        &probe_sql("-- v2").replace(
            "BEGIN\n",
            "BEGIN\n  IF NOT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) \
             THEN RAISE EXCEPTION 'fails outside the deploy'; END IF;\n",
        ),
    )?;
    let out = stack.cli(&["deploy", "probe", "dev"]).await?;
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stdout.contains("[ok] commit"), "{out}");
    assert!(out.stdout.contains("[FAIL] post-commit-smoke"), "{out}");
    assert!(out.stdout.contains("[ok] auto-rollback"), "{out}");
    assert!(
        out.stderr
            .contains("automatic rollback restored the backup"),
        "{out}"
    );
    assert_eq!(
        definition(&client).await?.as_deref(),
        Some(v1.as_str()),
        "v1 is live again"
    );
    let actions: Vec<String> = client
        .query("SELECT action || ':' || change FROM pgrollout.ledger WHERE identity = 'public.probe(integer)' ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        actions,
        [
            "deploy:created",
            "deploy:replaced",
            "auto-rollback:restored"
        ]
    );
    assert_eq!(probe_rows(&client).await?, 0);
    Ok(())
}

#[tokio::test]
async fn smoke_alone_reports_every_check_and_changes_nothing() -> Result<()> {
    let (stack, client) = probe_stack().await?;

    let out = stack.cli(&["smoke", "probe", "dev"]).await?;
    assert_eq!(out.code, 3, "not deployed yet: {out}");
    assert!(
        out.stdout
            .contains("[FAIL] Procedure exists: public.probe(integer) not found in the catalog"),
        "{out}"
    );

    assert_eq!(stack.cli(&["deploy", "probe", "dev"]).await?.code, 0);
    let out = stack.cli(&["smoke", "probe", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    let block: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("SMOKE TEST:"))
        .take(11)
        .collect();
    assert_eq!(
        block[0],
        "SMOKE TEST: public.probe(integer) @ DEV (standalone)"
    );
    assert_eq!(block[1], "  test: returns its argument");
    assert_eq!(
        block[3],
        "[ok] Procedure exists: public.probe(integer) exists in schema public"
    );
    assert_eq!(block[4], "[ok] Can execute (test data): returned 1 row(s)");
    assert_eq!(block[5], "[ok] Returns correct structure: returns (n int4)");
    assert!(
        block[6].starts_with("[ok] Execution time: 0.0") && block[6].ends_with("s (OK, bound 2s)"),
        "{}",
        block[6]
    );
    assert_eq!(block[7], "[ok] No errors detected: no errors or warnings");
    assert_eq!(block[9], "RESULT: [ok] PASS");

    // Broken live (by hand, outside pgrollout): the smoke test says so.
    client
        .batch_execute(&probe_sql("RAISE EXCEPTION 'hand-edited in prod';"))
        .await?;
    let out = stack.cli(&["smoke", "probe", "dev"]).await?;
    assert_eq!(out.code, 3, "{out}");
    assert!(
        out.stdout
            .contains("[FAIL] Can execute (test data): ERROR P0001: hand-edited in prod"),
        "{out}"
    );
    assert!(out.stdout.contains("RESULT: [FAIL] FAIL"), "{out}");
    assert_eq!(
        probe_rows(&client).await?,
        0,
        "smoke calls leave nothing behind"
    );
    Ok(())
}

/// A deploy that cannot take the per-target deploy lock is refused with the
/// one lock text every job kind shares (issue 14: a deploy and a rollback
/// used to word it differently): it names the target and the wait, says
/// nothing was changed, and nothing was.
#[tokio::test]
async fn a_deploy_that_waits_out_the_deploy_lock_says_nothing_was_changed() -> Result<()> {
    let stack = Stack::start_with(StackOptions {
        agent_timeouts: "lock = \"1s\"".into(),
        ..StackOptions::default()
    })
    .await?;
    let client = stack.zone("dev").pg.connect().await?;
    client
        .batch_execute("CREATE TABLE public.probe_calls (p integer)")
        .await?;
    stack.write_procedure("probe.sql", &probe_sql("-- v1"))?;
    let holder = stack.zone("dev").pg.connect().await?;
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&0x7067_726f_6c6c_6f75_i64])
        .await?;
    let out = stack.cli(&["deploy", "probe", "dev"]).await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains(
            "another rollout holds the deploy lock on target main (waited 1s); nothing was changed; try again when \
             it finishes"
        ),
        "{out}"
    );
    assert_eq!(definition(&client).await?, None, "nothing was created");
    drop(holder);
    Ok(())
}
