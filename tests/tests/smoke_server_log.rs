//! A deploy's smoke tests leave nothing in the target's server log. Each
//! pipelined smoke call used to be preceded by a `BEGIN` of its own (so that
//! a call ending the agent's transaction could not leave the calls behind it
//! in autocommit), and PostgreSQL logs that `BEGIN` inside a transaction as
//! "WARNING: there is already a transaction in progress": one line per smoke
//! call and step, 300 on a 150-call batch, in every production database's
//! log. The call now goes out in one message with its savepoint, which
//! needs no `BEGIN` (`agent/src/jobs/smoke/pipeline.rs`).
//!
//! The calls' texts end in the shapes a project writes them: a trailing
//! semicolon, a trailing `--` comment (which must not swallow what the agent
//! sends after it).

use anyhow::{Context, Result};
use pgrollout_tests::Stack;

/// More than 16 calls: the post-commit check runs on two sessions too.
const ROUTINES: usize = 20;

fn call_of(index: usize) -> String {
    let call = format!("SELECT public.quiet_{index:02}() AS answer");
    match index % 3 {
        0 => call,
        1 => format!("{call};"),
        _ => format!("{call} -- the answer, then a comment"),
    }
}

/// What a smoke report's `executes` check says (how many rows the call
/// returned, or its error).
fn executes(report: &serde_json::Value) -> Result<&str> {
    report["checks"]
        .as_array()
        .context("checks")?
        .iter()
        .find(|c| c["check"] == "executes")
        .and_then(|c| c["detail"].as_str())
        .context("an executes check")
}

#[tokio::test]
async fn a_batch_with_smoke_tests_writes_no_warning_to_the_server_log() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let routines: Vec<(String, String, String)> = (0..ROUTINES)
        .map(|index| {
            let name = format!("quiet_{index:02}");
            let statement = format!(
                "CREATE OR REPLACE FUNCTION public.{name}() RETURNS int LANGUAGE sql AS $$ SELECT {index} $$;\n"
            );
            let sidecar = format!(
                "[[smoke_tests]]\nname = \"answers\"\ncall = \"{}\"\nexpect_columns = [ {{ name = \"answer\", type = \"integer\" }} ]\n",
                call_of(index)
            );
            (name, statement, sidecar)
        })
        .collect();
    let list_path = stack.write_batch("quiet", &routines)?;

    let pg = &stack.zone("dev").pg;
    let log_offset = std::fs::metadata(pg.log_path())?.len();
    let document = stack.batch_status("dev", &list_path).await?;
    let reports = document["result"]["smoke"]
        .as_array()
        .context("smoke reports")?;
    for phase in ["in-transaction", "post-commit"] {
        let passed: Vec<&serde_json::Value> = reports
            .iter()
            .filter(|r| r["phase"] == phase && r["passed"] == true)
            .collect();
        assert_eq!(passed.len(), ROUTINES, "{phase}: {document}");
        // Each call ran and returned its one row, comment or not.
        for report in passed {
            assert_eq!(executes(report)?, "returned 1 row(s)", "{report}");
        }
    }

    let log = std::fs::read(pg.log_path())?;
    let written = String::from_utf8_lossy(&log[log_offset as usize..]);
    let warnings: Vec<&str> = written
        .lines()
        .filter(|line| line.contains("WARNING") || line.contains("ERROR"))
        .collect();
    assert!(
        warnings.is_empty(),
        "the deploy wrote {} warning or error line(s) to the server log, e.g. {:?}",
        warnings.len(),
        &warnings[..warnings.len().min(3)]
    );
    Ok(())
}

/// The calls' search path and time bound are set once for a run of calls,
/// outside their savepoints: a call that changes both for the session is
/// undone with its savepoint, so the next call still resolves names in its
/// routine's schema and is still stopped at its own bound.
#[tokio::test]
async fn a_call_that_changes_its_settings_does_not_change_the_next_calls() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client.batch_execute("CREATE SCHEMA app").await?;
    stack.write_procedure(
        "total.sql",
        "CREATE OR REPLACE FUNCTION total(n integer) RETURNS integer LANGUAGE sql AS $$ SELECT n + 1 $$;\n",
    )?;
    stack.write_procedure(
        "total.toml",
        "[schema]\nname = \"app\"\n\
         [[smoke_tests]]\nname = \"moves\"\n\
         call = \"SELECT pg_catalog.set_config('search_path', 'public', false) AS p, \
                 pg_catalog.set_config('statement_timeout', '0', false) AS t\"\n\
         [[smoke_tests]]\nname = \"resolves\"\ncall = \"SELECT total(1) AS result\"\n\
         expect_columns = [ { name = \"result\", type = \"integer\" } ]\n\
         [[smoke_tests]]\nname = \"bounded\"\ncall = \"SELECT pg_catalog.pg_sleep(5)\"\n\
         max_duration = \"300ms\"\n",
    )?;
    let out = stack
        .cli(&["deploy", "total", "dev", "--output", "json"])
        .await?;
    assert_eq!(out.code, 3, "the bounded call fails the smoke test: {out}");
    let document: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("one JSON document:\n{out}"))?;
    let report = |test: &str| {
        document["result"]["smoke"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["test"] == test && r["phase"] == "in-transaction")
            .with_context(|| format!("the {test:?} report in {document}"))
    };
    assert_eq!(
        report("moves")?["passed"],
        true,
        "the call that moves the settings ran"
    );
    let resolves = report("resolves")?;
    assert_eq!(
        (resolves["passed"].as_bool(), executes(resolves)?),
        (Some(true), "returned 1 row(s)"),
        "the second call resolved in app: {resolves}"
    );
    let bounded = report("bounded")?;
    assert_eq!(
        executes(bounded)?,
        "cancelled at the time bound",
        "the third call was stopped at its own bound: {bounded}"
    );
    let live: Option<String> = client
        .query_one("SELECT to_regprocedure('app.total(integer)')::text", &[])
        .await?
        .get(0);
    assert_eq!(live, None, "nothing was committed");
    Ok(())
}

/// The calls of a step share one savepoint, rolled back to before each next
/// call: no call sees what the one before it wrote, in either phase, and
/// nothing stays behind.
#[tokio::test]
async fn each_call_starts_from_the_state_before_the_calls() -> Result<()> {
    let stack = Stack::start(&["dev"]).await?;
    let client = stack.zone("dev").pg.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE public.scratch (n int);
             CREATE FUNCTION public.scribble() RETURNS int LANGUAGE sql AS
               $$ INSERT INTO public.scratch VALUES (1), (2), (3) RETURNING 1 $$;",
        )
        .await?;
    stack.write_procedure(
        "writer.sql",
        "CREATE OR REPLACE FUNCTION public.writer() RETURNS int LANGUAGE sql AS $$ SELECT public.scribble() $$;\n",
    )?;
    let mut sidecar = String::new();
    for round in 0..3 {
        sidecar.push_str(&format!(
            "[[smoke_tests]]\nname = \"writes {round}\"\ncall = \"SELECT public.writer() AS w\"\n\
             [[smoke_tests]]\nname = \"reads {round}\"\ncall = \"SELECT n FROM public.scratch\"\n"
        ));
    }
    stack.write_procedure("writer.toml", &sidecar)?;
    let out = stack
        .cli(&["deploy", "writer", "dev", "--output", "json"])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let document: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("one JSON document:\n{out}"))?;
    let reads: Vec<&serde_json::Value> = document["result"]["smoke"]
        .as_array()
        .context("smoke reports")?
        .iter()
        .filter(|r| r["test"].as_str().is_some_and(|t| t.starts_with("reads")))
        .collect();
    assert_eq!(reads.len(), 6, "three reads in each phase: {document}");
    for report in reads {
        assert_eq!(executes(report)?, "returned 0 row(s)", "{report}");
    }
    let left: i64 = client
        .query_one("SELECT count(*) FROM public.scratch", &[])
        .await?
        .get(0);
    assert_eq!(left, 0, "the calls' rows were all rolled back");
    Ok(())
}
