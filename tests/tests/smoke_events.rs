//! A smoke step's event carries the reports that did not pass; the job's
//! result carries every report (issue 15 item 9: a thousand routines'
//! passing reports made each step's event 160 KB more to journal, fsync,
//! send, store and relay while the deploy ran). Read where an operator and
//! a following controller read them: the result from `status --output
//! json`, the step's event from the controller's store.

use anyhow::{Context, Result};
use pgrollout_shared::proto::JobEvent;
use pgrollout_tests::Stack;
use prost::Message;

const GOOD: &str =
    "CREATE OR REPLACE FUNCTION public.good() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\n";
const BARE: &str =
    "CREATE OR REPLACE FUNCTION public.bare() RETURNS int LANGUAGE sql AS $$ SELECT 2 $$;\n";
const BAD: &str =
    "CREATE OR REPLACE FUNCTION public.bad() RETURNS int LANGUAGE sql AS $$ SELECT 3 $$;\n";

/// (routine, passed) of each smoke report in the events of `step` of the
/// rollout's job, as the store keeps them (`job_events.detail`).
async fn step_reports(stack: &Stack, rollout: &str, step: &str) -> Result<Vec<(String, bool)>> {
    // The detail as hex text, in each backend's own words.
    let hex = if std::env::var("PGROLLOUT_TEST_STORE").as_deref() == Ok("postgres") {
        "encode(e.detail, 'hex')"
    } else {
        "hex(e.detail)"
    };
    let rows = stack
        .store_rows(
            &format!(
                "SELECT {hex} FROM job_events e JOIN jobs j ON j.id = e.job_id \
                 WHERE j.rollout_id = $1 AND e.step = $2 AND e.detail IS NOT NULL ORDER BY e.seq"
            ),
            &[rollout, step],
        )
        .await?;
    let mut reports = Vec::new();
    for row in rows {
        let detail = hex::decode(row[0].as_deref().context("detail")?)?;
        let event = JobEvent::decode(detail.as_slice())?;
        reports.extend(event.smoke.into_iter().map(|r| (r.routine, r.passed)));
    }
    Ok(reports)
}

/// A stack whose project holds `good()`, with one smoke call.
async fn stack_with_good() -> Result<Stack> {
    let stack = Stack::start(&["dev"]).await?;
    stack.write_procedure("good.sql", GOOD)?;
    stack.write_procedure(
        "good.toml",
        "[[smoke_tests]]\nname = \"one\"\ncall = \"SELECT public.good() AS answer\"\n",
    )?;
    Ok(stack)
}

#[tokio::test]
async fn a_smoke_steps_event_carries_its_failures_and_the_result_every_report() -> Result<()> {
    let stack = stack_with_good().await?;
    stack.write_procedure("bare.sql", BARE)?;
    stack.write_procedure("bad.sql", BAD)?;
    stack.write_procedure(
        "bad.toml",
        "[[smoke_tests]]\nname = \"typed\"\ncall = \"SELECT public.bad() AS answer\"\n\
         expect_columns = [ { name = \"answer\", type = \"text\" } ]\n",
    )?;
    let list = stack.dir.path().join("list.txt");
    std::fs::write(&list, "good\nbare\nbad\n")?;
    let list = list.to_string_lossy().into_owned();

    let out = stack
        .cli(&["batch", "dev", &list, "--output", "json"])
        .await?;
    assert_eq!(out.code, 3, "a failed smoke test: {out}");
    let summary: serde_json::Value =
        serde_json::from_str(out.stdout.lines().last().context("a summary line")?)
            .with_context(|| format!("JSON lines:\n{out}"))?;
    let rollout = summary["rollout"].as_str().context("the rollout id")?;

    // The result: all three routines' reports, the failure among them.
    let out = stack.cli(&["status", rollout, "--output", "json"]).await?;
    let status: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("one JSON document:\n{out}"))?;
    let mut reported: Vec<(String, bool)> = status["result"]["smoke"]
        .as_array()
        .context("smoke reports")?
        .iter()
        .map(|r| {
            (
                r["routine"].as_str().unwrap_or_default().to_owned(),
                r["passed"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    reported.sort();
    assert_eq!(
        reported,
        vec![
            ("public.bad()".to_owned(), false),
            ("public.bare()".to_owned(), true),
            ("public.good()".to_owned(), true),
        ],
        "{status}"
    );

    // The step's event: the failure only.
    assert_eq!(
        step_reports(&stack, rollout, "smoke").await?,
        vec![("public.bad()".to_owned(), false)]
    );
    Ok(())
}

#[tokio::test]
async fn a_passing_smoke_steps_event_carries_no_report() -> Result<()> {
    let stack = stack_with_good().await?;
    let out = stack
        .cli(&["deploy", "good", "dev", "--output", "json"])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let document: serde_json::Value =
        serde_json::from_str(out.stdout.lines().last().context("a document")?)
            .with_context(|| format!("JSON:\n{out}"))?;
    let rollout = document["rollout"]["rollout"]
        .as_str()
        .context("the rollout id")?;
    for step in ["smoke", "post-commit-smoke"] {
        assert_eq!(step_reports(&stack, rollout, step).await?, vec![], "{step}");
    }
    assert_eq!(
        document["result"]["smoke"].as_array().map(Vec::len),
        Some(2),
        "in the transaction and after COMMIT: {document}"
    );
    Ok(())
}

/// Routines without smoke tests travel from the agent in a compact form
/// (issue 15 item 9); what an operator reads is every report, whole, in the
/// order the agent ran them: per phase, the deploy's order of routines.
#[tokio::test]
async fn existence_only_reports_reach_the_operator_whole_and_in_order() -> Result<()> {
    let stack = stack_with_good().await?;
    stack.write_procedure("bare.sql", BARE)?;
    // Another schema, whose name needs quoting, and a second routine
    // without a test: one compact group per phase and schema.
    let client = stack.zone("dev").pg.connect().await?;
    client.batch_execute("CREATE SCHEMA \"odd place\";").await?;
    stack.write_procedure(
        "elsewhere.sql",
        "CREATE OR REPLACE FUNCTION \"odd place\".elsewhere(n int) RETURNS int LANGUAGE sql AS $$ SELECT n $$;\n",
    )?;
    let list = stack.dir.path().join("list.txt");
    std::fs::write(&list, "bare\ngood\nelsewhere\n")?;
    let status = stack.batch_status("dev", &list).await?;
    let result = &status["result"];
    let order: Vec<&str> = result["routines"]
        .as_array()
        .context("routines")?
        .iter()
        .filter_map(|r| r["identity"].as_str())
        .collect();
    assert_eq!(order.len(), 3, "{result}");

    let expected: Vec<serde_json::Value> = ["in-transaction", "post-commit"]
        .iter()
        .flat_map(|phase| {
            order.iter().map(move |routine| {
                if *routine == "public.good()" {
                    return serde_json::json!([routine, "one", phase, true]);
                }
                let schema = if routine.starts_with("public.") {
                    "public"
                } else {
                    "odd place"
                };
                serde_json::json!([
                    routine,
                    "(no smoke test declared: existence only)",
                    phase,
                    true,
                    [[
                        "exists",
                        true,
                        format!("{routine} exists in schema {schema}")
                    ]]
                ])
            })
        })
        .collect();
    let reported: Vec<serde_json::Value> = result["smoke"]
        .as_array()
        .context("smoke reports")?
        .iter()
        .map(|r| {
            let head = [&r["routine"], &r["test"], &r["phase"], &r["passed"]];
            if r["test"] == "one" {
                return serde_json::json!(head);
            }
            let checks: Vec<serde_json::Value> = r["checks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| serde_json::json!([c["check"], c["passed"], c["detail"]]))
                .collect();
            serde_json::json!([head[0], head[1], head[2], head[3], checks])
        })
        .collect();
    assert_eq!(reported, expected, "{result}");
    Ok(())
}

/// The deploying CLI asks for the result with existence-only reports in
/// their compact form and puts them back itself (issue 15 item 9): what it
/// prints must be exactly the result the controller stored, every report
/// whole, in order.
#[tokio::test]
async fn the_deploying_cli_shows_the_stored_result_with_every_existence_only_report() -> Result<()>
{
    let stack = stack_with_good().await?;
    stack.write_procedure(
        "bare.sql",
        "CREATE OR REPLACE FUNCTION public.bare() RETURNS int LANGUAGE sql AS $$ SELECT 2 $$;\n\
         CREATE OR REPLACE FUNCTION public.bare(n int) RETURNS int LANGUAGE sql AS $$ SELECT n $$;\n",
    )?;
    let out = stack
        .cli(&["deploy", "bare", "dev", "--output", "json"])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let document: serde_json::Value =
        serde_json::from_str(out.stdout.lines().last().context("a document")?)
            .with_context(|| format!("JSON:\n{out}"))?;
    let shown = &document["result"]["smoke"];
    let details: Vec<(&str, &str)> = shown
        .as_array()
        .context("smoke reports")?
        .iter()
        .map(|r| {
            (
                r["phase"].as_str().unwrap_or_default(),
                r["checks"][0]["detail"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        details,
        [
            ("in-transaction", "public.bare() exists in schema public"),
            (
                "in-transaction",
                "public.bare(integer) exists in schema public"
            ),
            ("post-commit", "public.bare() exists in schema public"),
            (
                "post-commit",
                "public.bare(integer) exists in schema public"
            ),
        ],
        "{document}"
    );
    let rollout = document["rollout"]["rollout"]
        .as_str()
        .context("the rollout id")?;
    let status = stack.cli(&["status", rollout, "--output", "json"]).await?;
    assert_eq!(status.code, 0, "{status}");
    let stored: serde_json::Value = serde_json::from_str(status.stdout.trim())?;
    assert_eq!(&stored["result"]["smoke"], shown, "{stored}");
    assert_eq!(
        &stored["result"]["routines"],
        &document["result"]["routines"]
    );
    Ok(())
}
