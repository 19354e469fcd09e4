//! Issue 13, attacked as an insider would: SQL that is not a plan's routine
//! definitions (smoke calls, `[perf]` probe calls, pgTAP files) trying to end
//! or escape the transaction the agent runs it in. Every attempt is refused
//! when the plan is built — exit 1, `file:line` — and the database, the
//! ledger and the audit log show that nothing happened.
//!
//! The agent's own defence, for SQL that gets past the controller, is shown
//! by `agent_protocol.rs::smoke_calls_that_end_the_transaction_commit_nothing_even_past_the_controller`
//! (a hand-made controller offers the hostile calls to a real agent).

use anyhow::Result;
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::{CommandOutput, Stack, StackOptions};

const ROUTINE: &str =
    "CREATE OR REPLACE FUNCTION public.sc2()\nRETURNS integer LANGUAGE sql AS 'SELECT 2';\n";

/// What an attack must leave as it was: the victim's rows, the routine (not
/// created), the ledger (no table or no row) and the audit log.
struct Before {
    audit: String,
}

async fn victims(client: &Client) -> Result<Vec<i32>> {
    Ok(client
        .query("SELECT id FROM public.victim ORDER BY id", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

async fn ledger_rows(client: &Client) -> Result<i64> {
    let exists: bool = client
        .query_one("SELECT to_regclass('pgrollout.ledger') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one("SELECT count(*) FROM pgrollout.ledger", &[])
        .await?
        .get(0))
}

async fn routine_exists(client: &Client) -> Result<bool> {
    Ok(client
        .query_one("SELECT to_regprocedure('public.sc2()') IS NOT NULL", &[])
        .await?
        .get(0))
}

async fn audit(stack: &Stack) -> Result<String> {
    let out = stack.cli(&["audit", "--output", "json"]).await?;
    assert_eq!(out.code, 0, "{out}");
    Ok(out.stdout)
}

async fn victim_stack() -> Result<(Stack, Client, Before)> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE public.victim (id int PRIMARY KEY); \
             INSERT INTO public.victim SELECT generate_series(1, 6)",
        )
        .await?;
    stack.write_procedure("sc2.sql", ROUTINE)?;
    let before = Before {
        audit: audit(&stack).await?,
    };
    Ok((stack, client, before))
}

/// Runs `args` and checks the attack was refused before anything changed.
async fn refused(
    stack: &Stack,
    client: &Client,
    before: &Before,
    case: &str,
    args: &[&str],
    expect: &[&str],
) -> Result<()> {
    let out = stack.cli(args).await?;
    assert_eq!(out.code, 1, "{case}: exit 1 at plan time\n{out}");
    for text in expect {
        assert!(out.stderr.contains(text), "{case}: {text:?} in\n{out}");
    }
    assert_eq!(
        victims(client).await?,
        vec![1, 2, 3, 4, 5, 6],
        "{case}: victim rows"
    );
    assert!(
        !routine_exists(client).await?,
        "{case}: routine not created"
    );
    assert_eq!(ledger_rows(client).await?, 0, "{case}: no ledger row");
    assert_eq!(audit(stack).await?, before.audit, "{case}: nothing audited");
    Ok(())
}

#[tokio::test]
async fn smoke_calls_that_end_or_escape_the_transaction_are_refused_at_plan_time() -> Result<()> {
    let (stack, client, before) = victim_stack().await?;
    let cases: &[(&str, &str, &[&str])] = &[
        // "What was seen" 1: COMMIT, then a DELETE outside any transaction.
        (
            "commit then delete",
            "[[smoke_tests]]\nname = \"a\"\ncall = \"COMMIT\"\n\
             [[smoke_tests]]\nname = \"b\"\ncall = \"DELETE FROM public.victim WHERE id = 4\"\n",
            &[
                "procedures/sc2.toml:3:8: COMMIT (transaction control) is not allowed in a smoke test",
            ],
        ),
        (
            "rollback then dml",
            "[[smoke_tests]]\nname = \"a\"\ncall = \"ROLLBACK\"\n\
             [[smoke_tests]]\nname = \"b\"\ncall = \"DELETE FROM public.victim\"\n",
            &["procedures/sc2.toml:3:8: ROLLBACK (transaction control) is not allowed"],
        ),
        (
            "release the agent's savepoint",
            "[[smoke_tests]]\nname = \"a\"\ncall = \"RELEASE SAVEPOINT pgrollout_smoke\"\n",
            &["procedures/sc2.toml:3:8: RELEASE (transaction control) is not allowed"],
        ),
        (
            "commit inside DO",
            "[[smoke_tests]]\nname = \"a\"\n\
             call = \"DO $$ BEGIN DELETE FROM public.victim; COMMIT; END $$\"\n",
            &["procedures/sc2.toml:3:8: DO is not allowed in a smoke test"],
        ),
        (
            "commit through EXECUTE",
            "[[smoke_tests]]\nname = \"a\"\n\
             call = \"DO $$ BEGIN EXECUTE 'COMMIT'; END $$\"\n",
            &["procedures/sc2.toml:3:8: DO is not allowed"],
        ),
        (
            "set session authorization",
            "[[smoke_tests]]\nname = \"a\"\ncall = \"SET SESSION AUTHORIZATION postgres\"\n",
            &["procedures/sc2.toml:3:8: SET SESSION is not allowed"],
        ),
        (
            "discard all",
            "[[smoke_tests]]\nname = \"a\"\ncall = \"DISCARD ALL\"\n",
            &["procedures/sc2.toml:3:8: DISCARD ALL is not allowed"],
        ),
        (
            "two statements in one call",
            "[[smoke_tests]]\nname = \"a\"\ncall = \"SELECT 1; DELETE FROM public.victim\"\n",
            &["procedures/sc2.toml:3:8: the call holds 2 statements"],
        ),
        (
            "dblink to commit elsewhere",
            "[[smoke_tests]]\nname = \"a\"\n\
             call = \"SELECT dblink_exec('dbname=postgres', 'DELETE FROM public.victim')\"\n",
            &["procedures/sc2.toml:3:8: calls dblink_exec()"],
        ),
    ];
    for (case, sidecar, expect) in cases {
        stack.write_procedure("sc2.toml", sidecar)?;
        refused(
            &stack,
            &client,
            &before,
            case,
            &["deploy", "sc2", "dev"],
            expect,
        )
        .await?;
    }
    // A CALL is allowed, but a procedure that commits cannot inside the
    // agent's transaction: PostgreSQL refuses, the smoke test fails (exit
    // 3) and the deploy is rolled back.
    client
        .batch_execute(
            "CREATE PROCEDURE public.committer() LANGUAGE plpgsql AS \
             $$ BEGIN DELETE FROM public.victim WHERE id = 6; COMMIT; END $$",
        )
        .await?;
    stack.write_procedure(
        "sc2.toml",
        "[[smoke_tests]]\nname = \"a\"\ncall = \"CALL public.committer()\"\n",
    )?;
    let out = stack.cli(&["deploy", "sc2", "dev"]).await?;
    assert_eq!(out.code, 3, "{out}");
    assert!(
        out.stdout.contains("invalid transaction termination"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("a smoke call runs inside a transaction (the deploy's, and a rolled-back"),
        "the report says why, and what to do: {out}"
    );
    assert_eq!(victims(&client).await?, vec![1, 2, 3, 4, 5, 6]);
    assert!(!routine_exists(&client).await?);
    assert_eq!(ledger_rows(&client).await?, 0);

    // The same rule for `smoke` against an environment.
    stack.write_procedure(
        "sc2.toml",
        "[[smoke_tests]]\nname = \"a\"\ncall = \"ROLLBACK\"\n\
         [[smoke_tests]]\nname = \"b\"\ncall = \"DELETE FROM public.victim\"\n",
    )?;
    let before = Before {
        audit: audit(&stack).await?,
    };
    refused(
        &stack,
        &client,
        &before,
        "smoke command",
        &["smoke", "sc2", "dev"],
        &["procedures/sc2.toml:3:8: ROLLBACK (transaction control)"],
    )
    .await?;
    Ok(())
}

/// A session lock is not transactional: a smoke call that releases it —
/// by name, or through a function already in the database — lets another
/// rollout in while this one is still uncommitted. Named, the controller
/// refuses it; hidden, the agent finds the lock gone at COMMIT and rolls
/// back.
#[tokio::test]
async fn a_smoke_call_that_releases_the_deploy_lock_commits_nothing() -> Result<()> {
    let (stack, client, before) = victim_stack().await?;
    stack.write_procedure(
        "sc2.toml",
        "[[smoke_tests]]\nname = \"a\"\ncall = \"SELECT pg_advisory_unlock_all()\"\n",
    )?;
    refused(
        &stack,
        &client,
        &before,
        "named unlock",
        &["deploy", "sc2", "dev"],
        &["procedures/sc2.toml:3:8: calls pg_advisory_unlock_all()"],
    )
    .await?;

    client
        .batch_execute(
            "CREATE FUNCTION public.unlocker() RETURNS int LANGUAGE sql AS \
             $$ SELECT 1 FROM (SELECT pg_advisory_unlock_all()) AS released $$",
        )
        .await?;
    stack.write_procedure(
        "sc2.toml",
        "[[smoke_tests]]\nname = \"a\"\ncall = \"SELECT public.unlocker()\"\n",
    )?;
    let out = stack.cli(&["deploy", "sc2", "dev"]).await?;
    assert_eq!(out.code, 2, "failed and rolled back\n{out}");
    assert!(
        out.to_string()
            .contains("the deploy lock on target main was released while this job ran"),
        "{out}"
    );
    assert!(out.to_string().contains("rolled back"), "{out}");
    assert_eq!(victims(&client).await?, vec![1, 2, 3, 4, 5, 6]);
    assert!(!routine_exists(&client).await?, "routine not created");
    assert_eq!(ledger_rows(&client).await?, 0, "no ledger row");
    Ok(())
}

/// The agent's peak resident memory (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/{pid}/status"))?;
    Ok(kib / 1024)
}

/// Deploys sc2 with `sidecar`, returning the CLI's output and how much the
/// dev agent's peak memory grew meanwhile, in MiB.
async fn deploy_measuring_the_agent(stack: &Stack, sidecar: &str) -> Result<(CommandOutput, u64)> {
    stack.write_procedure("sc2.toml", sidecar)?;
    let agent = stack
        .zone("dev")
        .agent
        .as_ref()
        .expect("the dev agent runs");
    let before = peak_rss_mib(agent.pid())?;
    let out = stack.cli(&["deploy", "sc2", "dev"]).await?;
    let after = peak_rss_mib(agent.pid())?;
    Ok((out, after.saturating_sub(before)))
}

/// A smoke call is hostile input in its size too: one that answers with
/// 400 MB must not make the zone's agent hold 400 MB (10 GB would end it).
/// The agent counts the rows as they stream and keeps none.
#[tokio::test]
async fn a_smoke_call_that_returns_hundreds_of_megabytes_is_not_held_in_memory() -> Result<()> {
    let (stack, client, _) = victim_stack().await?;
    let (out, grew) = deploy_measuring_the_agent(
        &stack,
        "[[smoke_tests]]\nname = \"big\"\n\
         call = \"SELECT public.sc2() AS v, repeat('x', 1000000) AS filler FROM generate_series(1, 400)\"\n\
         max_duration = \"60s\"\n",
    )
    .await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("returned 400 row(s)"), "{out}");
    assert!(routine_exists(&client).await?);
    assert!(
        grew < 100,
        "the agent's peak memory grew by {grew} MiB for a 400 MB answer"
    );
    Ok(())
}

/// Notices too: a smoke call raising a flood of them is cancelled once the
/// agent has kept 4 MB of them — the test fails (exit 3, nothing deployed),
/// rather than the agent holding every one, or passing a test whose
/// notices it never read.
#[tokio::test]
async fn a_smoke_call_that_floods_notices_is_cancelled_and_fails() -> Result<()> {
    let (stack, client, _) = victim_stack().await?;
    client
        .batch_execute(
            "CREATE FUNCTION public.noisy() RETURNS int LANGUAGE plpgsql AS \
             $$ BEGIN RAISE NOTICE '%', repeat('n', 1000); RETURN 1; END $$",
        )
        .await?;
    let (out, grew) = deploy_measuring_the_agent(
        &stack,
        "[[smoke_tests]]\nname = \"noisy\"\n\
         call = \"SELECT public.sc2() + count(public.noisy()) AS n FROM generate_series(1, 100000)\"\n\
         max_duration = \"60s\"\n",
    )
    .await?;
    assert_eq!(out.code, 3, "smoke failed, rolled back\n{out}");
    assert!(
        out.stdout
            .contains("the call raised more than 4 MB of notices; the agent cancelled it"),
        "{out}"
    );
    assert!(!routine_exists(&client).await?, "nothing deployed");
    assert_eq!(victims(&client).await?, vec![1, 2, 3, 4, 5, 6]);
    assert!(grew < 100, "the agent's peak memory grew by {grew} MiB");
    Ok(())
}

#[tokio::test]
async fn perf_calls_and_pgtap_files_that_commit_are_refused_at_plan_time() -> Result<()> {
    let (stack, client, before) = victim_stack().await?;
    // "What was seen" 3: `[perf] call = "COMMIT"` committed the new body.
    stack.write_procedure("sc2.toml", "[perf]\ncall = \"COMMIT\"\n")?;
    refused(
        &stack,
        &client,
        &before,
        "perf commit",
        &["perf", "sc2", "dev"],
        &["procedures/sc2.toml:2:8: COMMIT (transaction control) is not allowed"],
    )
    .await?;
    stack.write_procedure(
        "sc2.toml",
        "[perf]\ncall = \"CALL public.committer()\"\nruns = 2\n\
         [[smoke_tests]]\nname = \"a\"\ncall = \"PREPARE TRANSACTION 'x'\"\n",
    )?;
    refused(
        &stack,
        &client,
        &before,
        "prepare transaction",
        &["perf", "sc2", "dev"],
        &["procedures/sc2.toml:6:8: PREPARE (transaction control) is not allowed"],
    )
    .await?;

    // A pgTAP file that commits, or escapes in other ways.
    std::fs::create_dir_all(stack.project.join("tests"))?;
    stack.write_procedure("sc2.toml", "[tests]\npgtap = \"tests/sc2.pgtap.sql\"\n")?;
    let files: &[(&str, &str, &str)] = &[
        (
            "pgtap commit",
            "BEGIN;\nSELECT plan(1);\nDELETE FROM public.victim;\nCOMMIT;\n",
            "tests/sc2.pgtap.sql:4:1: COMMIT (transaction control) would end the test transaction",
        ),
        (
            "pgtap prepare transaction",
            "SELECT plan(1);\nPREPARE TRANSACTION 'keep';\n",
            "tests/sc2.pgtap.sql:2:1: PREPARE (transaction control) would end",
        ),
        (
            "pgtap discard",
            "SELECT plan(1);\n\nDISCARD ALL;\n",
            "tests/sc2.pgtap.sql:3:1: DISCARD ALL acts on the session",
        ),
        (
            "pgtap session authorization",
            "SET SESSION AUTHORIZATION postgres;\n",
            "tests/sc2.pgtap.sql:1:1: SET SESSION changes the session's user",
        ),
        (
            "pgtap vacuum",
            "SELECT plan(1);\nVACUUM public.victim;\n",
            "tests/sc2.pgtap.sql:2:1: VACUUM cannot run in",
        ),
    ];
    for (case, text, expect) in files {
        std::fs::write(stack.project.join("tests/sc2.pgtap.sql"), text)?;
        refused(
            &stack,
            &client,
            &before,
            case,
            &["deploy", "sc2", "dev"],
            &[expect],
        )
        .await?;
    }
    Ok(())
}

/// "What was seen" 9: a `SECURITY DEFINER` routine without `SET
/// search_path` is warned about by `plan`, `check` and the syntax gate, and
/// refused by the syntax gate of an environment with `require_search_path`.
#[tokio::test]
async fn security_definer_without_search_path_is_warned_about_and_refused_where_required(
) -> Result<()> {
    let stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into(), "prod".into()],
        environment_extra: vec![
            ("dev".into(), "gates = [\"syntax\"]".into()),
            (
                "prod".into(),
                "gates = [\"syntax\"]\nrequire_search_path = true".into(),
            ),
        ],
        ..StackOptions::default()
    })
    .await?;
    stack.write_procedure(
        "sc2.sql",
        "CREATE OR REPLACE FUNCTION public.sc2()\nRETURNS integer LANGUAGE sql SECURITY DEFINER\nAS 'SELECT 2';\n",
    )?;
    let warning = "procedures/sc2.sql:1: public.sc2() is SECURITY DEFINER without SET search_path";

    let plan = stack.cli(&["plan", "sc2"]).await?;
    assert_eq!(plan.code, 0, "{plan}");
    assert!(
        plan.stdout.contains(&format!("warning: {warning}")),
        "{plan}"
    );
    assert!(plan.stdout.contains("dev: ready"), "{plan}");
    assert!(plan.stdout.contains("prod: blocked"), "{plan}");
    assert!(
        plan.stdout
            .contains("require_search_path is set for this environment"),
        "{plan}"
    );

    let check = stack.cli(&["check", "sc2", "dev"]).await?;
    assert!(
        check.stdout.contains(&format!("warning: {warning}")),
        "{check}"
    );

    // Refused in prod: exit 1, nothing created, nothing in the ledger.
    let audit_before = audit(&stack).await?;
    let out = stack.cli(&["deploy", "sc2", "prod"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains(warning), "{out}");
    let prod = stack.zone("prod").pg.connect().await?;
    assert!(!routine_exists(&prod).await?, "not created in prod");
    assert_eq!(ledger_rows(&prod).await?, 0);
    let audit_after = audit(&stack).await?;
    assert!(
        audit_after.len() > audit_before.len() && audit_after.contains("syntax"),
        "the refusal is audited with its gate"
    );

    // Warned, not refused, in dev; with its search_path fixed, no warning.
    let out = stack.cli(&["deploy", "sc2", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    stack.write_procedure(
        "sc2.sql",
        "CREATE OR REPLACE FUNCTION public.sc2()\nRETURNS integer LANGUAGE sql SECURITY DEFINER\n\
         SET search_path = pg_catalog, pg_temp\nAS 'SELECT 2';\n",
    )?;
    let plan = stack.cli(&["plan", "sc2"]).await?;
    assert!(!plan.stdout.contains("SECURITY DEFINER"), "{plan}");
    assert!(plan.stdout.contains("prod: ready"), "{plan}");
    Ok(())
}
