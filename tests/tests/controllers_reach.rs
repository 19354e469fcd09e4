//! Issue 18, item 2: "agents and operators may connect to any controller; a
//! job for an agent is delivered by the controller that holds its stream" —
//! for every kind of job, not only a rollout's. Three controllers on one
//! PostgreSQL store; the operator's CLI on A, the agents' streams on B (and
//! C). Each job below was refused on A before, for want of the agent there:
//! a drift scan, the audit anchors' read, a watch's samples (the side
//! channel, `engine/delivery.rs`'s `ask`), the retry of a rollout in doubt,
//! and a fleet whose targets are held by B and C.
//!
//! Real processes throughout; a deploy is held at its apply by a row lock
//! the test holds (`pgrollout_tests::stall`).

mod watch_support;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use pgrollout_tests::failover::OtherController;
use pgrollout_tests::fleet::ExtraTarget;
use pgrollout_tests::stall::{
    agent_blocked, hold_routine_lock, ledger_rollouts, live_body, prepare, rollout_id, state_of,
    AGENT_LOCK_TIMEOUT,
};
use pgrollout_tests::{OutputMark, PgCluster, Process, Stack, StackOptions};

const WAIT: Duration = Duration::from_secs(30);

/// The stack (its controller is A, the CLI's) on `store`, and controllers
/// B and C on the same store, started; agents are not moved yet.
async fn three_controllers(
    store: &PgCluster,
    options: StackOptions,
) -> Result<(Stack, [(OtherController, Process); 2])> {
    let stack = Stack::start_with(StackOptions {
        store_url: Some(store.url()),
        ..options
    })
    .await?;
    let others = stack.start_b_and_c().await?;
    Ok((stack, others))
}

/// Starts (or restarts) `zone`'s agent listing only `controller`, and waits
/// until it is connected there.
async fn agent_on(stack: &mut Stack, zone: &str, controller: &OtherController) -> Result<()> {
    stack.agent_listing(zone, &[&controller.agents]).await
}

/// How many audit entries of `action` there are.
async fn audited(stack: &Stack, action: &str) -> Result<usize> {
    stack.audited(action, None).await
}

/// The store, the stack (A) with `stall` v1 deployed through A to the dev
/// agent on B — a deploy that also anchors the audit head in dev's ledger —,
/// and the logs of B and C.
struct AgentOnB {
    store: PgCluster,
    stack: Stack,
    b: Process,
    b_addresses: OtherController,
    c: Process,
}

async fn agent_on_b() -> Result<AgentOnB> {
    let store = PgCluster::start("store").await?;
    let (mut stack, [(b, b_process), (_c, c_process)]) =
        three_controllers(&store, StackOptions::default()).await?;
    agent_on(&mut stack, "dev", &b).await?;
    prepare(&stack).await?;
    Ok(AgentOnB {
        store,
        stack,
        b: b_process,
        b_addresses: b,
        c: c_process,
    })
}

#[tokio::test]
async fn a_drift_scan_asked_of_one_controller_reaches_the_agent_on_another() -> Result<()> {
    // Every part bound: what a pattern leaves out is dropped (stopped) at once.
    let AgentOnB {
        store: _store,
        stack,
        b,
        c: _c,
        ..
    } = agent_on_b().await?;
    // A drift scan asked of A: B offers it, A reports what the agent found.
    let mark = b.mark();
    let clean = stack.cli(&["drift", "dev"]).await?;
    assert_eq!(clean.code, 0, "nothing drifted: {clean}");
    assert!(clean.stdout.contains("no drift in dev"), "{clean}");
    b.wait_for_line_after(
        mark,
        "offering a side-channel job another controller recorded",
        WAIT,
    )
    .await?;
    let client = stack.zone("dev").pg.connect().await?;
    client
        .batch_execute(
            "CREATE OR REPLACE FUNCTION public.stall() RETURNS integer LANGUAGE sql AS $$ SELECT 7 $$",
        )
        .await?;
    let drifted = stack.cli(&["drift", "dev"]).await?;
    assert_eq!(drifted.code, 4, "drift found is exit 4: {drifted}");
    assert!(
        drifted
            .stdout
            .contains("changed by hand: public.stall() (definition)"),
        "{drifted}"
    );
    assert_eq!(audited(&stack, "drift.scanned").await?, 2, "each scan once");
    assert_eq!(audited(&stack, "drift.detected").await?, 1);
    Ok(())
}

#[tokio::test]
async fn audit_verify_on_one_controller_checks_the_anchors_of_an_agent_on_another() -> Result<()> {
    // Every part bound: what a pattern leaves out is dropped (stopped) at once.
    let AgentOnB {
        store: _store,
        stack,
        b,
        c: _c,
        ..
    } = agent_on_b().await?;
    // `audit verify` on A checks the anchors dev's ledger holds, read by B.
    let mark = b.mark();
    let verify = stack.cli(&["audit", "verify"]).await?;
    assert_eq!(verify.code, 0, "{verify}");
    assert!(
        verify.stdout.contains("anchors: zone dev (environment dev")
            && verify.stdout.contains("): checked, 1 anchor(s)")
            && !verify.stdout.contains("NOT CHECKED"),
        "the zone's anchors were read: {verify}"
    );
    b.wait_for_line_after(
        mark,
        "offering a side-channel job another controller recorded",
        WAIT,
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_watch_created_on_one_controller_samples_the_agent_on_another() -> Result<()> {
    let AgentOnB {
        store: _store,
        stack,
        b,
        c,
        ..
    } = agent_on_b().await?;
    // A watch created on A: its baseline is a sample the agent on B took,
    // and its samples go on, counting the calls made since.
    watch_support::write(&stack, "wreach", watch_support::FAST)?;
    watch_support::deploy(&stack, "wreach").await?;
    let marks = [stack.controller.mark(), b.mark(), c.mark()];
    let created = watch_support::create_watch(&stack, "wreach").await?;
    assert_eq!(created.code, 0, "{created}");
    assert!(
        created
            .stdout
            .contains("baseline (track_functions = all):\n  public.wreach(integer): "),
        "{created}"
    );
    b.wait_for_line_after(
        marks[1],
        "offering a side-channel job another controller recorded",
        WAIT,
    )
    .await?;
    let watch = watch_support::watch_id(&created)?;
    watch_support::call(&stack, "wreach", 5).await?;
    // Whichever controller samples it (A, or the watches' leader).
    tokio::select! {
        counted = calls_counted(&stack.controller, &watch, marks[0]) => counted?,
        counted = calls_counted(&b, &watch, marks[1]) => counted?,
        counted = calls_counted(&c, &watch, marks[2]) => counted?,
    }
    Ok(())
}

/// Waits for a sample of `watch` in `controller`'s log after `mark` that
/// counted the 5 calls made since its baseline.
async fn calls_counted(controller: &Process, watch: &str, mut mark: OutputMark) -> Result<()> {
    loop {
        let (_, calls, next) = watch_support::next_sample(controller, watch, mark).await?;
        if calls >= 5 {
            return Ok(());
        }
        mark = next;
    }
}

/// Waits until no agent session is left in the zone's cluster (a killed
/// agent's backend has noticed and rolled back).
async fn agent_sessions_gone(pg: &PgCluster) -> Result<()> {
    let client = pg.connect().await?;
    let deadline = Instant::now() + WAIT;
    loop {
        let sessions: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgrollout'",
                &[],
            )
            .await?
            .get(0);
        if sessions == 0 {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "agent sessions still present");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_rollout_in_doubt_is_retried_from_a_controller_not_holding_the_agent() -> Result<()> {
    let store = PgCluster::start("store").await?;
    let (mut stack, [(b, b_process), _c]) = three_controllers(
        &store,
        StackOptions {
            agent_timeouts: AGENT_LOCK_TIMEOUT.into(),
            deployment_extra: "job_lease = \"2s\"".into(),
            ..StackOptions::default()
        },
    )
    .await?;
    agent_on(&mut stack, "dev", &b).await?;
    prepare(&stack).await?;

    // A deploy asked of B, which holds the agent, is left in doubt: the
    // agent dies mid-apply and comes back without its journal.
    let a_operators = std::mem::replace(&mut stack.operators, b.operators.clone());
    let pg = &stack.zone("dev").pg;
    let lock = hold_routine_lock(pg).await?;
    let mut cli = stack
        .spawn_cli(&["deploy", "stall", "dev"], "deploy")
        .await?;
    let rollout = rollout_id(&cli).await?;
    agent_blocked(pg).await?;
    stack.kill_agent("dev").await?;
    let exit = cli.wait_for_exit(WAIT).await?;
    assert_eq!(exit.code(), Some(2), "{}", cli.output_so_far());
    lock.batch_execute("ROLLBACK").await?;
    agent_sessions_gone(&stack.zone("dev").pg).await?;
    std::fs::remove_file(stack.zone("dev").backup_dir.join("pgrollout-agent.journal"))
        .context("removing the agent's journal")?;
    agent_on(&mut stack, "dev", &b).await?;
    assert_eq!(state_of(&stack, &rollout).await?, "unknown");
    assert_eq!(live_body(&stack.zone("dev").pg).await?, "select 1");

    // The operator retries it on A: B offers the new attempt.
    stack.operators = a_operators;
    let mark = b_process.mark();
    let retry = stack.cli(&["retry", &rollout]).await?;
    assert_eq!(retry.code, 0, "{retry}");
    assert!(retry.stdout.contains("[ok] commit"), "{retry}");
    b_process
        .wait_for_line_after(mark, "offering a job another controller recorded", WAIT)
        .await?;
    let pg = &stack.zone("dev").pg;
    assert_eq!(live_body(pg).await?, "select 2");
    let rows = ledger_rollouts(pg).await?;
    assert_eq!(
        rows.iter().filter(|r| **r == rollout).count(),
        1,
        "applied once: {rows:?}"
    );
    assert_eq!(state_of(&stack, &rollout).await?, "succeeded");
    let entries = stack.audit_entries().await?;
    let of_rollout = |action: &str| {
        entries
            .iter()
            .filter(|e| e["action"] == action && e["rollout_id"] == rollout.as_str())
            .count()
    };
    assert_eq!(of_rollout("rollout.retried"), 1);
    assert_eq!(of_rollout("job.finished"), 1, "one result recorded");
    Ok(())
}

const FLEET: &str = r#"
[environments.prod]
zones = ["prod-eu", "prod-us"]
labels = { tier = "prod" }
[environments.prod.rollout]
max_concurrent = 2
"#;

const ANSWER_SQL: &str = "CREATE OR REPLACE FUNCTION public.fleet_answer() RETURNS integer \
     LANGUAGE sql AS $$ SELECT 42 $$;\n";

const ANSWER_TOML: &str = r#"
[[smoke_tests]]
name = "answers 42"
call = "SELECT public.fleet_answer()"
expect_columns = [ { name = "fleet_answer", type = "integer" } ]
"#;

#[tokio::test]
async fn a_fleet_started_on_one_controller_runs_on_agents_held_by_two_others() -> Result<()> {
    let store = PgCluster::start("store").await?;
    let (mut stack, [(b, b_process), (c, c_process)]) = three_controllers(
        &store,
        StackOptions {
            zones: vec!["prod-eu".into(), "prod-us".into()],
            start_agents: false,
            controller_extra: FLEET.into(),
            ..StackOptions::default()
        },
    )
    .await?;
    let prod = |name| ExtraTarget {
        name,
        labels: "tier = \"prod\"",
    };
    stack.add_targets("prod-eu", &[prod("t1")]).await?;
    stack
        .add_targets(
            "prod-us",
            &[
                prod("t1"),
                ExtraTarget {
                    name: "scratch",
                    labels: "tier = \"test\"",
                },
            ],
        )
        .await?;
    agent_on(&mut stack, "prod-eu", &b).await?;
    agent_on(&mut stack, "prod-us", &c).await?;
    stack.write_procedure("fleet_answer.sql", ANSWER_SQL)?;
    stack.write_procedure("fleet_answer.toml", ANSWER_TOML)?;

    let marks = (b_process.mark(), c_process.mark());
    let out = stack.cli(&["deploy", "fleet_answer", "prod"]).await?;
    assert_eq!(out.code, 0, "{out}");
    for (zone, process, mark) in [
        ("prod-eu", &b_process, marks.0),
        ("prod-us", &c_process, marks.1),
    ] {
        process
            .wait_for_line_after(mark, "offering a job another controller recorded", WAIT)
            .await
            .with_context(|| format!("the controller holding {zone}'s agent offered its job"))?;
    }
    // Selected by label across both controllers' agents, each once; the
    // target labelled otherwise is left alone.
    for (zone, target, selected) in [
        ("prod-eu", "t1", true),
        ("prod-us", "t1", true),
        ("prod-us", "scratch", false),
    ] {
        let client = stack.connect_target(zone, target).await?;
        let exists: bool = client
            .query_one(
                "SELECT to_regprocedure('public.fleet_answer()') IS NOT NULL",
                &[],
            )
            .await?
            .get(0);
        assert_eq!(exists, selected, "{zone}/{target}");
        if selected {
            let rows: i64 = client
                .query_one(
                    "SELECT count(*) FROM pgrollout.ledger WHERE identity LIKE '%fleet_answer%'",
                    &[],
                )
                .await?
                .get(0);
            assert_eq!(rows, 1, "{zone}/{target} deployed once");
        }
    }
    assert_eq!(
        audited(&stack, "job.finished").await?,
        2,
        "one result per target"
    );
    Ok(())
}

/// The lines of a batch's report that do not vary from run to run: its
/// steps, progress and smoke results, without the words holding numbers
/// (durations, ids, paths) but with the progress counts (`2/2`).
fn report_shape(stdout: &str) -> Vec<String> {
    let count = |word: &str| {
        word.contains('/')
            && word
                .split('/')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    };
    // A progress line short of its total ("post-commit-smoke 1/2") shows
    // only when 100 ms passed since the last one: timing, not shape.
    let partial = |line: &str| {
        let mut words = line.split_whitespace();
        let (Some(_step), Some(count), None) = (words.next(), words.next(), words.next()) else {
            return false;
        };
        matches!(count.split_once('/'), Some((done, total)) if done != total
            && done.parse::<u32>().is_ok() && total.parse::<u32>().is_ok())
    };
    stdout
        .lines()
        .filter(|line| line.starts_with("  ") || line.starts_with("RESULT"))
        .filter(|line| !partial(line))
        .map(|line| {
            line.split_whitespace()
                .filter(|word| count(word) || !word.chars().any(|c| c.is_ascii_digit()))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Two routines `reach_a` and `reach_b` answering `n`, each with a smoke
/// test, and the list file of a batch of both.
fn write_batch(stack: &Stack, n: u32) -> Result<String> {
    for name in ["reach_a", "reach_b"] {
        stack.write_procedure(
            &format!("{name}.sql"),
            &format!(
                "CREATE OR REPLACE FUNCTION public.{name}() RETURNS integer LANGUAGE sql AS 'select {n}';\n"
            ),
        )?;
        stack.write_procedure(
            &format!("{name}.toml"),
            &format!(
                "[[smoke_tests]]\nname = \"answers\"\ncall = \"SELECT public.{name}() AS v\"\n\
                 expect_columns = [ {{ name = \"v\", type = \"integer\" }} ]\n"
            ),
        )?;
    }
    let list = stack.dir.path().join("reach.txt");
    std::fs::write(&list, "reach_a\nreach_b\n")?;
    Ok(list.to_string_lossy().into_owned())
}

#[tokio::test]
async fn a_batch_and_a_deploy_asked_of_one_controller_print_what_local_ones_print() -> Result<()> {
    let AgentOnB {
        store: _store,
        mut stack,
        b: _b_process,
        b_addresses: b,
        c: _c,
    } = agent_on_b().await?;
    // The figure first: dispatch to result through A, 20 deploys (printed).
    let mut took = Vec::new();
    for n in 0..20 {
        stack.write_procedure(
            "stall.sql",
            &format!(
                "CREATE OR REPLACE FUNCTION public.stall() RETURNS integer LANGUAGE sql AS 'select {}';\n",
                10 + n
            ),
        )?;
        let started = Instant::now();
        let out = stack.cli(&["deploy", "stall", "dev"]).await?;
        took.push(started.elapsed());
        assert_eq!(out.code, 0, "{out}");
    }
    took.sort();
    eprintln!(
        "20 deploys asked of A, agent on B: median {:?}, min {:?}, max {:?}",
        took[took.len() / 2],
        took[0],
        took[took.len() - 1]
    );
    // Asked of B, which holds the agent: the local report.
    let list = write_batch(&stack, 3)?;
    let a_operators = std::mem::replace(&mut stack.operators, b.operators.clone());
    let local = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(local.code, 0, "{local}");
    stack.operators = a_operators;
    // Asked of A: the same steps, progress and smoke results, from the
    // events B stored.
    write_batch(&stack, 4)?;
    let remote = stack.cli(&["batch", "dev", &list]).await?;
    assert_eq!(remote.code, 0, "{remote}");
    let shape = report_shape(&local.stdout);
    assert!(
        shape.iter().any(|l| l == "apply 2/2"),
        "the local report has the apply's progress: {local}"
    );
    assert_eq!(
        report_shape(&remote.stdout),
        shape,
        "A: {remote}\nB: {local}"
    );

    // A deploy's smoke report, as printed by the CLI on A and on B.
    stack.write_procedure(
        "stall.toml",
        "[[smoke_tests]]\nname = \"answers\"\ncall = \"SELECT public.stall() AS v\"\n\
         expect_columns = [ { name = \"v\", type = \"integer\" } ]\n",
    )?;
    let smoke_report = |stdout: &str| -> Vec<String> {
        stdout
            .lines()
            .skip_while(|l| !l.starts_with("SMOKE TEST"))
            .take_while(|l| !l.starts_with("DEPLOYMENT LOG"))
            .map(|l| {
                l.split_whitespace()
                    .filter(|w| !w.chars().any(|c| c.is_ascii_digit()))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    let mut reports = Vec::new();
    for (n, operators) in [(50, b.operators.clone()), (51, stack.operators.clone())] {
        stack.write_procedure(
            "stall.sql",
            &format!(
                "CREATE OR REPLACE FUNCTION public.stall() RETURNS integer LANGUAGE sql AS 'select {n}';\n"
            ),
        )?;
        let asked = std::mem::replace(&mut stack.operators, operators);
        let out = stack.cli(&["deploy", "stall", "dev"]).await?;
        stack.operators = asked;
        assert_eq!(out.code, 0, "{out}");
        reports.push(smoke_report(&out.stdout));
    }
    assert!(
        reports[0].iter().any(|l| l == "RESULT: [ok] PASS"),
        "{:?}",
        reports[0]
    );
    assert_eq!(reports[1], reports[0], "the smoke report on A as on B");

    Ok(())
}
