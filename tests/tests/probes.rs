//! The gates that need an agent to look at a real database (issue 4): the
//! syntax gate's dry run (`check`, with plpgsql_check where installed), the
//! performance gate's probes (old against new definition, in QA), and pgTAP
//! files as part of "tests passed". Real clusters, real binaries.

use anyhow::Result;
use pgrollout_tests::{PgCluster, Stack, StackOptions};

/// Whether `extension` can be created in the cluster (its Debian package is
/// installed on this machine); the scenarios cover the absent case always.
async fn available(pg: &PgCluster, extension: &str) -> Result<bool> {
    let client = pg.connect().await?;
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_available_extensions WHERE name = $1",
            &[&extension],
        )
        .await?;
    Ok(row.get::<_, i64>(0) == 1)
}

async fn exists(pg: &PgCluster, signature: &str) -> Result<bool> {
    let client = pg.connect().await?;
    let row = client
        .query_one("SELECT to_regprocedure($1) IS NOT NULL", &[&signature])
        .await?;
    Ok(row.get(0))
}

/// A SQL function whose body names a table that does not exist: the parser
/// accepts it, PostgreSQL refuses it at CREATE (line 6 of the file).
const BROKEN_SQL_FUNCTION: &str = "-- Counts rows of a table that was never created.
CREATE OR REPLACE FUNCTION public.broken_count()
RETURNS bigint
LANGUAGE sql
AS $$
  SELECT count(*) FROM public.no_such_table
$$;
";

/// A PL/pgSQL function whose body names a column that does not exist:
/// CREATE accepts it (PL/pgSQL is checked at run time); plpgsql_check does
/// not (line 8 of the file).
const LAZY_PLPGSQL_FUNCTION: &str = "-- Reads a column that was never created.

CREATE OR REPLACE FUNCTION public.lazy_uid()
RETURNS text
LANGUAGE plpgsql
AS $$
BEGIN
  RETURN (SELECT m.no_such_column FROM public.material m LIMIT 1);
END
$$;
";

#[tokio::test]
async fn the_syntax_gate_dry_runs_on_the_database_and_refuses_with_file_and_line() -> Result<()> {
    let stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into()],
        environment_extra: vec![("dev".into(), "gates = [\"syntax\"]".into())],
        ..StackOptions::default()
    })
    .await?;
    let dev = &stack.zone("dev").pg;
    stack.write_procedure("broken.sql", BROKEN_SQL_FUNCTION)?;

    // The deploy is refused by the dry run, with file, routine and line.
    let out = stack.cli(&["deploy", "broken_count", "dev"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("gate syntax refused: the dry-run apply on dev's database (rollout r-"),
        "{out}"
    );
    assert!(
        out.stderr.contains(
            "procedures/broken.sql:6 public.broken_count(): error 42P01: relation \"public.no_such_table\" does not exist"
        ),
        "{out}"
    );
    assert!(
        !exists(dev, "public.broken_count()").await?,
        "nothing was created"
    );

    // The same on demand; the dry run is a recorded rollout of its own.
    let out = stack.cli(&["check", "broken_count", "dev"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stdout.contains("CHECK @ DEV: 1 error(s), 0 warning(s)"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("  procedures/broken.sql:6 public.broken_count(): error 42P01"),
        "{out}"
    );
    assert!(out.stdout.contains("[FAIL] dry-run-apply"), "{out}");
    let rollouts = stack.cli(&["rollouts", "--env", "dev"]).await?;
    assert!(rollouts.stdout.contains("check"), "{rollouts}");

    // Without plpgsql_check, a PL/pgSQL body is only checked as far as
    // CREATE checks it, and the operator is told so.
    stack.write_procedure("lazy.sql", LAZY_PLPGSQL_FUNCTION)?;
    let out = stack.cli(&["check", "lazy_uid", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .contains("note: plpgsql_check is not installed in target main, so PL/pgSQL bodies were not checked"),
        "{out}"
    );
    assert!(
        !exists(dev, "public.lazy_uid()").await?,
        "a check changes nothing"
    );

    if !available(dev, "plpgsql_check").await? {
        eprintln!("postgresql-15-plpgsql-check is not installed here: only the absent case ran");
        return Ok(());
    }
    dev.execute_sql("CREATE EXTENSION plpgsql_check").await?;
    let out = stack.cli(&["check", "lazy_uid", "dev"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stdout.contains(
            "procedures/lazy.sql:8 public.lazy_uid(): error 42703: column m.no_such_column does not exist"
        ),
        "{out}"
    );
    assert!(out.stdout.contains("[plpgsql_check]"), "{out}");
    let out = stack.cli(&["deploy", "lazy_uid", "dev"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("gate syntax refused:"), "{out}");
    assert!(
        out.stderr
            .contains("procedures/lazy.sql:8 public.lazy_uid()"),
        "{out}"
    );
    assert!(!exists(dev, "public.lazy_uid()").await?);

    // Fixed, it passes the dry run and deploys; the gate says what it checked.
    stack.write_procedure(
        "lazy.sql",
        &LAZY_PLPGSQL_FUNCTION.replace("m.no_such_column", "m.uid"),
    )?;
    let out = stack.cli(&["deploy", "lazy_uid", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains(
            "gate [ok] syntax: parsed by PostgreSQL's parser; dry-run apply on dev's database passed and was rolled back"
        ),
        "{out}"
    );
    assert!(exists(dev, "public.lazy_uid()").await?);
    Ok(())
}

/// A routine whose speed is set by pg_sleep: `factor` 1 is the baseline,
/// 2 is twice as slow. `version` changes the text without changing speed.
fn slowpoke(version: &str, factor: u32) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION public.slowpoke(p_ms integer)
RETURNS integer
LANGUAGE plpgsql
AS $$
BEGIN
  -- {version}
  PERFORM pg_sleep({factor} * p_ms / 1000.0);
  RETURN p_ms;
END
$$;
"
    )
}

#[tokio::test]
async fn the_performance_gate_passes_an_unchanged_routine_and_refuses_one_twice_as_slow(
) -> Result<()> {
    let stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into(), "qa".into(), "prod".into()],
        environment_extra: vec![
            (
                "qa".into(),
                "promote_from = \"dev\"\nrun_perf_probe = true".into(),
            ),
            (
                "prod".into(),
                "promote_from = \"qa\"\ngates = [\"performance\"]".into(),
            ),
        ],
        ..StackOptions::default()
    })
    .await?;
    stack.write_procedure(
        "slowpoke.toml",
        "[perf]\ncall = \"SELECT public.slowpoke(25)\"\nruns = 5\n",
    )?;
    let promote = |version: &'static str, factor: u32| {
        let stack = &stack;
        async move {
            stack.write_procedure("slowpoke.sql", &slowpoke(version, factor))?;
            for environment in ["dev", "qa"] {
                let out = stack.cli(&["deploy", "slowpoke", environment]).await?;
                anyhow::ensure!(out.code == 0, "deploy to {environment}: {out}");
                if environment == "qa" {
                    // A version PROD will refuse is flagged [FAIL] in QA already.
                    let mark = if factor == 1 {
                        "[ok] perf-probe"
                    } else {
                        "[FAIL] perf-probe"
                    };
                    anyhow::ensure!(out.stdout.contains(mark), "{out}");
                    return Ok(out);
                }
            }
            unreachable!()
        }
    };

    // v1 is new everywhere: measured, nothing to compare with.
    let qa = promote("v1", 1).await?;
    assert!(
        qa.stdout
            .contains("public.slowpoke(integer): new in prod, no baseline; new median"),
        "{qa}"
    );
    let out = stack.cli(&["deploy", "slowpoke", "prod"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .contains("gate [ok] performance: public.slowpoke(integer): new in prod"),
        "{out}"
    );

    // v2 changes a comment only: as fast as v1, so PROD takes it, showing both medians.
    let qa = promote("v2", 1).await?;
    assert!(
        qa.stdout.contains("public.slowpoke(integer): old median "),
        "{qa}"
    );
    let out = stack.cli(&["deploy", "slowpoke", "prod"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .contains("gate [ok] performance: public.slowpoke(integer): new median "),
        "{out}"
    );
    assert!(out.stdout.contains("vs old median "), "{out}");
    assert!(
        out.stdout.contains("≤ 120%, 5 runs each) (probed in qa)"),
        "{out}"
    );

    // v3 is twice as slow: QA measured it, PROD refuses it, exit 1, both medians named.
    promote("v3", 2).await?;
    let out = stack.cli(&["deploy", "slowpoke", "prod"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("gate performance refused: public.slowpoke(integer): new median "),
        "{out}"
    );
    assert!(out.stderr.contains("of the old median "), "{out}");
    assert!(
        out.stderr
            .contains("over the 120% limit (probe in qa, rollout r-"),
        "{out}"
    );
    let prod = stack.zone("prod").pg.connect().await?;
    let live: String = prod
        .query_one("SELECT prosrc FROM pg_proc WHERE proname = 'slowpoke'", &[])
        .await?
        .get(0);
    assert!(live.contains("-- v2"), "PROD kept v2: {live}");

    // On demand, after the deploy: the old definition is the one PROD runs.
    let out = stack.cli(&["perf", "slowpoke", "qa"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("PERFORMANCE PROBE @ QA"), "{out}");
    assert!(out.stdout.contains("(prod's version (plan "), "{out}");
    let percent: u32 = out
        .stdout
        .split("new median ")
        .nth(1)
        .and_then(|rest| rest.split(" ms (").nth(1))
        .and_then(|rest| rest.split('%').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_default();
    assert!((160..=260).contains(&percent), "about twice as slow: {out}");

    // A plan QA never probed is refused in PROD, and the operator is told how.
    stack.write_procedure("slowpoke.sql", &slowpoke("v4", 1))?;
    let out = stack.cli(&["deploy", "slowpoke", "prod"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("no performance probe of plan "),
        "{out}"
    );
    assert!(
        out.stderr.contains("run `pgrollout perf slowpoke qa`"),
        "{out}"
    );
    Ok(())
}

const DOUBLE_IT: &str = "CREATE OR REPLACE FUNCTION public.double_it(p integer)
RETURNS integer
LANGUAGE sql
IMMUTABLE
AS $$ SELECT p * 2 $$;
";

const DOUBLE_IT_TESTS: &str =
    "-- pg_prove style: the wrapper is dropped, pgrollout rolls back itself.
BEGIN;
SELECT plan(2);
SELECT has_function('public', 'double_it', ARRAY['integer']);
SELECT is(public.double_it(21), 42, 'doubles');
SELECT * FROM finish();
ROLLBACK;
";

#[tokio::test]
async fn pgtap_files_run_after_deploy_and_decide_tests_passed() -> Result<()> {
    let stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into(), "qa".into()],
        environment_extra: vec![
            ("dev".into(), "run_pgtap = true".into()),
            (
                "qa".into(),
                "promote_from = \"dev\"\ngates = [\"tests_passed\"]".into(),
            ),
        ],
        ..StackOptions::default()
    })
    .await?;
    stack.write_procedure("double.sql", DOUBLE_IT)?;
    stack.write_procedure(
        "double.toml",
        "[tests]\npgtap = \"tests/double.pgtap.sql\"\n",
    )?;
    std::fs::create_dir_all(stack.project.join("tests"))?;
    std::fs::write(
        stack.project.join("tests/double.pgtap.sql"),
        DOUBLE_IT_TESTS,
    )?;
    let dev = &stack.zone("dev").pg;

    // pgTAP absent: the deploy goes through, the tests are reported skipped,
    // and QA refuses a plan whose tests did not run.
    let out = stack.cli(&["deploy", "double_it", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("[-] pgtap"), "{out}");
    assert!(
        out.stdout
            .contains("tests/double.pgtap.sql: skipped: pgTAP is not installed in target main"),
        "{out}"
    );
    let out = stack.cli(&["deploy", "double_it", "qa"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(
            "gate tests_passed refused: pgTAP file tests/double.pgtap.sql did not run in dev (rollout r-"
        ),
        "{out}"
    );

    if !available(dev, "pgtap").await? {
        eprintln!("postgresql-15-pgtap is not installed here: only the absent case ran");
        return Ok(());
    }
    dev.execute_sql("CREATE EXTENSION pgtap").await?;
    let out = stack.cli(&["deploy", "double_it", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("tests/double.pgtap.sql: 2 of 2 passed"),
        "{out}"
    );
    let out = stack.cli(&["deploy", "double_it", "qa"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout
            .contains("passed its smoke tests and pgTAP (tests/double.pgtap.sql 2 of 2) in dev"),
        "{out}"
    );

    // A bug the tests catch: DEV keeps the deploy, QA refuses the plan.
    stack.write_procedure("double.sql", &DOUBLE_IT.replace("p * 2", "p * 3"))?;
    let out = stack.cli(&["deploy", "double_it", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("[FAIL] pgtap"), "{out}");
    assert!(
        out.stdout.contains("1 of 2 failed: not ok 2 - doubles"),
        "{out}"
    );
    let out = stack.cli(&["deploy", "double_it", "qa"]).await?;
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("pgTAP file tests/double.pgtap.sql failed in dev (rollout r-"),
        "{out}"
    );
    assert!(out.stderr.contains("have: 63"), "{out}");

    // A script is hostile input in its size too: the agent stops reading
    // at 16 MB of output (this one prints 20), and the tests fail saying so.
    std::fs::write(
        stack.project.join("tests/double.pgtap.sql"),
        "SELECT repeat('x', 1000000) FROM generate_series(1, 20);\n",
    )?;
    stack.write_procedure("double.sql", DOUBLE_IT)?;
    let out = stack.cli(&["deploy", "double_it", "dev"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("[FAIL] pgtap"), "{out}");
    assert!(
        out.stdout
            .contains("statement 1: the script printed more than 16 MB; the agent stopped reading"),
        "{out}"
    );
    Ok(())
}

#[tokio::test]
async fn a_parked_deploy_is_dry_run_when_its_last_approval_arrives() -> Result<()> {
    let stack = Stack::start_with(StackOptions {
        zones: vec!["dev".into()],
        environment_extra: vec![(
            "dev".into(),
            "gates = [\"syntax\"]\nrequire_approval = true".into(),
        )],
        ..StackOptions::default()
    })
    .await?;
    let dev = &stack.zone("dev").pg;

    // Parked first: the dry run waits for the approval, then refuses.
    stack.write_procedure("broken.sql", BROKEN_SQL_FUNCTION)?;
    let out = stack.cli(&["deploy", "broken_count", "dev"]).await?;
    assert_eq!(out.code, 5, "{out}");
    assert!(out.stderr.contains("awaits approval"), "{out}");
    let approved = stack
        .cli_as("approver-1", &["approve", &out.request_id()?])
        .await?;
    assert_eq!(approved.code, 1, "{approved}");
    assert!(
        approved
            .stderr
            .contains("gate syntax refused: the dry-run apply on dev's database"),
        "{approved}"
    );
    assert!(
        approved.stderr.contains("procedures/broken.sql:6"),
        "{approved}"
    );
    assert!(!exists(dev, "public.broken_count()").await?);

    // A sound routine passes its dry run on approval and is deployed.
    let out = stack.cli(&["deploy", "reconcilemupstream", "dev"]).await?;
    assert_eq!(out.code, 5, "{out}");
    let approved = stack
        .cli_as("approver-1", &["approve", &out.request_id()?])
        .await?;
    assert_eq!(approved.code, 0, "{approved}");
    assert!(
        approved.stdout.contains("approved; rollout r-"),
        "{approved}"
    );
    let audit = stack.cli(&["audit", "--output", "json"]).await?;
    assert!(audit.stdout.contains("check.started"), "{audit}");
    Ok(())
}
