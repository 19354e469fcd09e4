//! The post-commit smoke test spreads a large batch's calls over the
//! sessions opened while the deploy's transaction ran (the target's
//! `post_commit_connections`, default 2), and every one of those sessions
//! runs its calls in a sealed transaction: a `COMMIT` from a call would fail
//! there, as in the deploy's own.
//!
//! Each smoke call asks a spy routine (outside the plan) to say, in a
//! NOTICE the report carries, which backend ran it and whether the pending
//! seal rows reject an immediate constraint check — exactly what a COMMIT
//! would run into.

use anyhow::{Context, Result};
use pgrollout_tests::stack::{Stack, StackOptions};

/// A batch of this many routines, each with one smoke call: more than 16
/// calls, so the post-commit check is spread over two sessions.
const ROUTINES: usize = 20;

async fn stack_with_spy(target_extra: &str) -> Result<(Stack, String)> {
    let stack = Stack::start_with(StackOptions {
        agent_target_extra: target_extra.into(),
        ..StackOptions::default()
    })
    .await?;
    stack
        .zone("dev")
        .pg
        .connect()
        .await?
        .batch_execute(
            "CREATE FUNCTION public.seal_spy() RETURNS int LANGUAGE plpgsql AS $$
             DECLARE seal text := 'unsealed';
             BEGIN
               BEGIN
                 SET CONSTRAINTS ALL IMMEDIATE;
               EXCEPTION WHEN unique_violation THEN seal := 'sealed';
               END;
               RAISE NOTICE 'seal_spy pid=% %', pg_backend_pid(), seal;
               RETURN 1;
             END $$",
        )
        .await?;
    let routines: Vec<(String, String, String)> = (0..ROUTINES)
        .map(|index| {
            let name = format!("spied_{index:02}");
            let statement = format!(
                "CREATE OR REPLACE FUNCTION public.{name}() RETURNS int LANGUAGE sql AS $$ SELECT {index} $$;\n"
            );
            let sidecar = format!(
                "[[smoke_tests]]\nname = \"spied\"\ncall = \"SELECT public.seal_spy() + public.{name}() AS answer\"\n"
            );
            (name, statement, sidecar)
        })
        .collect();
    let path = stack.write_batch("spied", &routines)?;
    Ok((stack, path.to_string_lossy().into_owned()))
}

/// Deploys `list` as one batch (exit 0) and reads its rollout back: the
/// result, which succeeded, with every smoke report.
async fn batch_result(stack: &Stack, list: &str) -> Result<serde_json::Value> {
    let status = stack
        .batch_status("dev", std::path::Path::new(list))
        .await?;
    assert_eq!(status["result"]["outcome"], "succeeded", "{status}");
    Ok(status)
}

/// Each phase's smoke reports as (backend pid, sealed or not), from the
/// NOTICE the spy raised in each call.
fn spied(result: &serde_json::Value, phase: &str) -> Result<Vec<(String, String)>> {
    result["smoke"]
        .as_array()
        .context("smoke reports")?
        .iter()
        .filter(|report| report["phase"] == phase)
        .map(|report| {
            assert_eq!(report["passed"], true, "{report}");
            let notice = report["checks"]
                .as_array()
                .context("checks")?
                .iter()
                .find(|check| check["check"] == "warnings")
                .and_then(|check| check["detail"].as_str())
                .context("a warnings check")?;
            let said = notice
                .split("seal_spy pid=")
                .nth(1)
                .with_context(|| format!("the spy's notice in {notice:?}"))?;
            let mut words = said.trim_end_matches(')').split_whitespace();
            Ok((
                words.next().context("pid")?.to_owned(),
                words.next().context("seal")?.to_owned(),
            ))
        })
        .collect()
}

fn distinct(seen: &[(String, String)]) -> Vec<String> {
    let mut pids: Vec<String> = seen.iter().map(|(pid, _)| pid.clone()).collect();
    pids.sort();
    pids.dedup();
    pids
}

#[tokio::test]
async fn a_large_batch_is_checked_after_commit_on_two_sealed_sessions() -> Result<()> {
    let (stack, list) = stack_with_spy("").await?;
    let document = batch_result(&stack, &list).await?;
    let result = &document["result"];

    let inside = spied(result, "in-transaction")?;
    let after = spied(result, "post-commit")?;
    assert_eq!(
        (inside.len(), after.len()),
        (ROUTINES, ROUTINES),
        "{document}"
    );
    assert!(
        inside
            .iter()
            .chain(&after)
            .all(|(_, seal)| seal == "sealed"),
        "every call ran with the seal's row pending: {inside:?} {after:?}"
    );
    let deploy_session = distinct(&inside);
    assert_eq!(deploy_session.len(), 1, "{inside:?}");
    let post_commit_sessions = distinct(&after);
    assert_eq!(post_commit_sessions.len(), 2, "{after:?}");
    assert!(
        !post_commit_sessions.contains(&deploy_session[0]),
        "the post-commit check runs on other sessions than the deploy's: {after:?}"
    );
    // Each session took a run of routines in order, about half the calls.
    let first_half: Vec<&String> = after[..ROUTINES / 2].iter().map(|(pid, _)| pid).collect();
    assert!(
        first_half.iter().all(|pid| **pid == after[0].0),
        "{after:?}"
    );

    let client = stack.zone("dev").pg.connect().await?;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM pgrollout.ledger", &[])
        .await?
        .get(0);
    assert_eq!(rows, ROUTINES as i64);
    Ok(())
}

#[tokio::test]
async fn one_post_commit_connection_checks_every_call_on_one_sealed_session() -> Result<()> {
    let (stack, list) = stack_with_spy("post_commit_connections = 1\n").await?;
    let document = batch_result(&stack, &list).await?;
    let after = spied(&document["result"], "post-commit")?;
    assert_eq!(after.len(), ROUTINES, "{document}");
    assert!(after.iter().all(|(_, seal)| seal == "sealed"), "{after:?}");
    assert_eq!(distinct(&after).len(), 1, "{after:?}");
    Ok(())
}

/// The post-commit sessions are opened while the transaction runs, once its
/// CREATEs are sent: a batch that creates opens them (the deploy's own
/// session and two more), and an unchanged redeploy, which has no
/// post-commit check, opens none of them.
#[tokio::test]
async fn post_commit_sessions_are_opened_only_for_a_deploy_that_creates() -> Result<()> {
    let (stack, list) = stack_with_spy("").await?;
    let pg = &stack.zone("dev").pg;
    pg.log_connections().await?;

    let offset = pg.log_offset()?;
    batch_result(&stack, &list).await?;
    assert_eq!(
        pg.sessions_since(offset, "pgrollout")?,
        3,
        "the deploy's session and the two post-commit ones"
    );

    let offset = pg.log_offset()?;
    let again = batch_result(&stack, &list).await?;
    assert!(
        again["result"]["routines"]
            .as_array()
            .context("routines")?
            .iter()
            .all(|routine| routine["status"] == "unchanged"),
        "{again}"
    );
    assert_eq!(
        pg.sessions_since(offset, "pgrollout")?,
        1,
        "an unchanged redeploy runs on the deploy's session alone"
    );
    Ok(())
}
