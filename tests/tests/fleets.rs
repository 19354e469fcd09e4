//! Issue 24, the fleet tour on real clusters with the real binaries: an
//! environment `prod` of every `tier = "prod"` target in zones prod-eu and
//! prod-us (two agents, each with several databases of its cluster), a
//! canary, waves bounded overall and per zone, a smoke test that fails on one
//! target only, the halt that leaves the rest untouched, `status`, `resume`,
//! and the rollback of the whole fleet rollout — asserted in every target's
//! catalog and ledger, the exit codes and the printed summary.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use pgrollout_tests::fleet::ExtraTarget;
use pgrollout_tests::tokio_postgres::Client;
use pgrollout_tests::{Stack, StackOptions};

const FLEET: &str = r#"
[environments.prod]
zones = ["prod-eu", "prod-us"]
labels = { tier = "prod" }
[environments.prod.rollout]
canary = "prod-eu/t1"
max_concurrent = 2
max_concurrent_per_zone = 1
[environments.gated]
zones = ["prod-eu", "prod-us"]
labels = { tier = "prod" }
gates = ["syntax"]
[environments.gated.rollout]
canary = "prod-us/t2"
max_concurrent = 4
[environments.listed]
targets = ["prod-eu/t2", "prod-zz/gone"]
[environments.listed.rollout]
max_concurrent = 2
"#;

/// Answers 42, unless its database holds a `fleet_poison` table: then its
/// smoke test fails there, and only there. With a `fleet_hold` table, a call
/// outside the deploy's transaction (the post-commit smoke: the session
/// without the deploy's advisory lock) waits for the test's lock 4242.
fn answer_sql(version: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION public.fleet_answer() RETURNS integer LANGUAGE plpgsql AS $$\n\
         BEGIN\n  -- {version}\n  IF to_regclass('public.fleet_poison') IS NOT NULL THEN\n    \
         RAISE EXCEPTION 'this target is poisoned';\n  END IF;\n  \
         IF to_regclass('public.fleet_hold') IS NOT NULL AND NOT EXISTS (SELECT FROM pg_locks \
         WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted) THEN\n    \
         PERFORM pg_advisory_xact_lock(4242);\n  END IF;\n  RETURN 42;\nEND;\n$$;\n"
    )
}

const ANSWER_TOML: &str = r#"
[[smoke_tests]]
name = "answers 42"
routine = "fleet_answer()"
call = "SELECT public.fleet_answer()"
max_duration = "5s"
expect_columns = [ { name = "fleet_answer", type = "integer" } ]
"#;

/// Two zones; besides each zone's `main` (not labelled: not in the fleet),
/// t1 and t2 labelled prod, and in prod-us a `scratch` labelled test.
async fn fleet_stack() -> Result<Stack> {
    fleet_stack_with("").await
}

async fn fleet_stack_with(deployment_extra: &str) -> Result<Stack> {
    let mut stack = Stack::start_with(StackOptions {
        zones: vec!["prod-eu".into(), "prod-us".into()],
        start_agents: false,
        controller_extra: FLEET.into(),
        deployment_extra: deployment_extra.into(),
        ..StackOptions::default()
    })
    .await?;
    let prod = |name| ExtraTarget {
        name,
        labels: "tier = \"prod\"",
    };
    stack
        .add_targets("prod-eu", &[prod("t1"), prod("t2")])
        .await?;
    stack
        .add_targets(
            "prod-us",
            &[
                prod("t1"),
                prod("t2"),
                ExtraTarget {
                    name: "scratch",
                    labels: "tier = \"test\"",
                },
            ],
        )
        .await?;
    stack.start_agent("prod-eu").await?;
    stack.start_agent("prod-us").await?;
    stack.write_procedure("fleet_answer.sql", &answer_sql("v1"))?;
    stack.write_procedure("fleet_answer.toml", ANSWER_TOML)?;
    Ok(stack)
}

async fn has_answer(client: &Client) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT to_regprocedure('public.fleet_answer()') IS NOT NULL",
            &[],
        )
        .await?
        .get(0))
}

/// The target's ledger rows for the routine: (action, plan id, rollout id,
/// undoes a row), oldest first; none when the ledger was never created.
async fn ledger(client: &Client) -> Result<Vec<(String, String, String, bool)>> {
    let exists: bool = client
        .query_one("SELECT to_regclass('pgrollout.ledger') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    Ok(client
        .query(
            "SELECT action, plan_id, rollout_id, undoes_ledger_id IS NOT NULL FROM pgrollout.ledger \
             WHERE identity LIKE '%fleet_answer%' ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect())
}

fn fleet_id(stdout: &str) -> Result<String> {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("rollout f-"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|id| format!("f-{id}"))
        .context("no fleet rollout id printed")
}

const FLEET_TARGETS: [(&str, &str); 4] = [
    ("prod-eu", "t1"),
    ("prod-eu", "t2"),
    ("prod-us", "t1"),
    ("prod-us", "t2"),
];

#[tokio::test]
async fn fleet_tour_canary_waves_halt_resume_and_rollback_of_the_rollout() -> Result<()> {
    let stack = fleet_stack().await?;
    let poisoned = stack.connect_target("prod-us", "t1").await?;
    poisoned
        .batch_execute("CREATE TABLE public.fleet_poison ()")
        .await?;

    // The deploy: canary prod-eu/t1, then prod-eu/t2 with prod-us/t1 (one
    // per zone, two at once), then prod-us/t2. prod-us/t1 fails its smoke
    // test: the rollout halts and prod-us/t2 is left untouched.
    let out = stack.cli(&["deploy", "fleet_answer", "prod"]).await?;
    assert_eq!(out.code, 3, "the worst code of the fleet's targets: {out}");
    let fleet = fleet_id(&out.stdout)?;
    assert!(
        out.stdout.contains("wave 0") && out.stdout.contains("canary: prod-eu/t1"),
        "{out}"
    );
    assert!(
        out.stdout.contains("prod-eu/t2, prod-us/t1"),
        "wave 1, one per zone: {out}"
    );
    assert!(out.stdout.contains("this target is poisoned"), "{out}");
    assert!(
        out.stdout.contains(
            "Summary: 2 succeeded, 1 failed, 1 untouched, 0 rolled back — halted, exit 3"
        ),
        "{out}"
    );
    assert!(
        !out.stdout.contains("wave 2"),
        "the halt starts no further wave: {out}"
    );
    let mut plan_ids = Vec::new();
    for (zone, target) in FLEET_TARGETS {
        let client = stack.connect_target(zone, target).await?;
        let rows = ledger(&client).await?;
        let deployed = zone == "prod-eu";
        assert_eq!(has_answer(&client).await?, deployed, "{zone}/{target}");
        assert_eq!(
            rows.len(),
            usize::from(deployed),
            "{zone}/{target}: {rows:?}"
        );
        plan_ids.extend(rows.into_iter().map(|row| row.1));
    }
    assert_eq!(plan_ids.len(), 2);
    assert_eq!(plan_ids[0], plan_ids[1], "one plan id in every ledger");
    // Outside the selector: never touched.
    for (zone, database) in [
        ("prod-us", "scratch"),
        ("prod-eu", "main"),
        ("prod-us", "main"),
    ] {
        let client = if database == "main" {
            stack.zone(zone).pg.connect().await?
        } else {
            stack.connect_target(zone, database).await?
        };
        assert!(!has_answer(&client).await?, "{zone}/{database}");
    }

    // status: every target's wave and state.
    let status = stack.cli(&["status", &fleet, "--output", "json"]).await?;
    assert_eq!(status.code, 0, "{status}");
    let document: serde_json::Value = serde_json::from_str(&status.stdout)?;
    let targets = document["fleet"]["targets"].as_array().context("targets")?;
    let seen: Vec<(String, u64, String)> = targets
        .iter()
        .map(|t| {
            (
                format!(
                    "{}/{}",
                    t["zone"].as_str().unwrap_or(""),
                    t["target"].as_str().unwrap_or("")
                ),
                t["wave"].as_u64().unwrap_or(99),
                t["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("prod-eu/t1".into(), 0, "succeeded".into()),
            ("prod-eu/t2".into(), 1, "succeeded".into()),
            ("prod-us/t1".into(), 1, "failed".into()),
            ("prod-us/t2".into(), 2, "untouched".into()),
        ],
        "{status}"
    );
    assert_eq!(document["fleet"]["state"], "halted");
    assert_eq!(document["fleet"]["exit_code"], 3);

    // The cause fixed, resume: the failed target again, then the last wave.
    poisoned
        .batch_execute("DROP TABLE public.fleet_poison")
        .await?;
    let resumed = stack.cli(&["resume", &fleet]).await?;
    assert_eq!(resumed.code, 0, "{resumed}");
    assert!(
        resumed.stdout.contains(
            "Summary: 4 succeeded, 0 failed, 0 untouched, 0 rolled back — succeeded, exit 0"
        ),
        "{resumed}"
    );
    for (zone, target) in FLEET_TARGETS {
        let client = stack.connect_target(zone, target).await?;
        assert!(has_answer(&client).await?, "{zone}/{target}");
        let rows = ledger(&client).await?;
        assert_eq!(
            rows.len(),
            1,
            "applied once, never twice: {zone}/{target}: {rows:?}"
        );
        assert_eq!(rows[0].1, plan_ids[0], "the same plan id: {zone}/{target}");
    }
    // A finished fleet rollout does not resume.
    let again = stack.cli(&["resume", &fleet]).await?;
    assert_eq!(again.code, 1, "{again}");
    assert!(again.stderr.contains("not halted"), "{again}");

    // Rollback of the fleet rollout: every target it changed, newest first.
    let undone = stack.cli(&["rollback", "--rollout", &fleet]).await?;
    assert_eq!(undone.code, 0, "{undone}");
    assert!(
        undone.stdout.contains(
            "Summary: 0 succeeded, 0 failed, 0 untouched, 4 rolled back — rolled_back, exit 0"
        ),
        "{undone}"
    );
    for (zone, target) in FLEET_TARGETS {
        let client = stack.connect_target(zone, target).await?;
        assert!(
            !has_answer(&client).await?,
            "a new routine is dropped again: {zone}/{target}"
        );
        let rows = ledger(&client).await?;
        assert_eq!(rows.len(), 2, "{zone}/{target}: {rows:?}");
        assert!(
            rows[1].3,
            "the rollback row names the row it undoes: {rows:?}"
        );
    }

    // A one-target environment behaves as before: its zone's `main` only.
    let single = stack.cli(&["deploy", "fleet_answer", "prod-eu"]).await?;
    assert_eq!(single.code, 0, "{single}");
    assert!(single.stdout.contains("DEPLOYMENT LOG"), "{single}");
    assert!(!single.stdout.contains("FLEET ROLLOUT"), "{single}");
    assert!(has_answer(&stack.zone("prod-eu").pg.connect().await?).await?);
    assert!(!has_answer(&stack.connect_target("prod-eu", "t1").await?).await?);
    Ok(())
}

async fn definition(stack: &Stack, zone: &str, target: &str) -> Result<String> {
    Ok(stack
        .connect_target(zone, target)
        .await?
        .query_one(
            "SELECT coalesce(pg_get_functiondef(to_regprocedure('public.fleet_answer()')), '')",
            &[],
        )
        .await?
        .get(0))
}

#[tokio::test]
async fn failure_policies_rollback_on_failure_a_failed_canary_and_an_unreachable_target(
) -> Result<()> {
    let stack = fleet_stack().await?;
    // All well: --output json lists every target.
    let out = stack
        .cli(&["deploy", "fleet_answer", "prod", "--output", "json"])
        .await?;
    assert_eq!(out.code, 0, "{out}");
    let document: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(document["exit_code"], 0, "{out}");
    assert_eq!(document["fleet"]["summary"]["succeeded"], 4, "{out}");
    assert_eq!(
        document["fleet"]["targets"].as_array().map(Vec::len),
        Some(4)
    );

    // v2 fails on the last wave's target: with --rollback-on-failure every
    // target already done goes back to v1.
    stack.write_procedure("fleet_answer.sql", &answer_sql("v2"))?;
    let last = stack.connect_target("prod-us", "t2").await?;
    last.batch_execute("CREATE TABLE public.fleet_poison ()")
        .await?;
    let out = stack
        .cli(&["deploy", "fleet_answer", "prod", "--rollback-on-failure"])
        .await?;
    assert_eq!(out.code, 3, "{out}");
    assert!(
        out.stdout.contains(
            "Summary: 0 succeeded, 1 failed, 0 untouched, 3 rolled back — rolled_back, exit 3"
        ),
        "{out}"
    );
    for (zone, target) in FLEET_TARGETS {
        let definition = definition(&stack, zone, target).await?;
        assert!(
            definition.contains("-- v1"),
            "{zone}/{target}: {definition}"
        );
    }

    // A failed canary stops everything else.
    let canary = stack.connect_target("prod-eu", "t1").await?;
    canary
        .batch_execute("CREATE TABLE public.fleet_poison ()")
        .await?;
    let out = stack.cli(&["deploy", "fleet_answer", "prod"]).await?;
    assert_eq!(out.code, 3, "{out}");
    assert!(
        out.stdout.contains(
            "Summary: 0 succeeded, 1 failed, 3 untouched, 0 rolled back — halted, exit 3"
        ),
        "{out}"
    );
    for (zone, target) in FLEET_TARGETS {
        assert!(
            definition(&stack, zone, target).await?.contains("-- v1"),
            "{zone}/{target}"
        );
    }

    // A listed target no agent announces fails without touching the others;
    // --continue-on-error goes on.
    let out = stack
        .cli(&[
            "deploy",
            "fleet_answer",
            "listed",
            "--continue-on-error",
            "--agent-wait",
            "1s",
        ])
        .await?;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stdout.contains("no agent connected for zone prod-zz"),
        "{out}"
    );
    assert!(
        out.stdout.contains(
            "Summary: 1 succeeded, 1 failed, 0 untouched, 0 rolled back — failed, exit 2"
        ),
        "{out}"
    );
    assert!(definition(&stack, "prod-eu", "t2").await?.contains("-- v2"));
    Ok(())
}

const WAIT: Duration = Duration::from_secs(30);

/// Waits until a session of the agent waits on a lock in `client`'s
/// database (the post-commit smoke held by the test's lock).
async fn agent_waiting(client: &Client) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'",
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

#[tokio::test]
async fn an_agent_killed_mid_wave_leaves_its_target_unknown_until_its_ledger_settles_it(
) -> Result<()> {
    let mut stack = fleet_stack_with("job_lease = \"2s\"").await?;
    // prod-us/t1 (wave 1) commits, then its post-commit smoke waits for the
    // test's lock; its agent is killed right then.
    let held = stack.connect_target("prod-us", "t1").await?;
    held.batch_execute("CREATE TABLE public.fleet_hold (); SELECT pg_advisory_lock(4242)")
        .await?;
    let mut cli = stack
        .spawn_cli(&["deploy", "fleet_answer", "prod"], "deploy")
        .await?;
    agent_waiting(&held).await?;
    stack.kill_agent("prod-us").await?;
    let exit = cli.wait_for_exit(WAIT).await?;
    let printed = cli.output_so_far();
    assert_eq!(exit.code(), Some(2), "{printed}");
    let fleet = fleet_id(&printed)?;
    assert!(
        printed.contains("Summary: 2 succeeded, 0 failed, 1 untouched, 0 rolled back, 1 unknown — halted, exit 2"),
        "{printed}"
    );
    // Still in doubt: resume refuses.
    let refused = stack.cli(&["resume", &fleet]).await?;
    assert_eq!(refused.code, 1, "{refused}");
    assert!(refused.stderr.contains("is unknown"), "{refused}");

    // The agent restarts and settles the job from the target's ledger.
    held.batch_execute("SELECT pg_advisory_unlock(4242)")
        .await?;
    let mark = stack.controller.mark();
    stack.start_agent("prod-us").await?;
    stack
        .controller
        .wait_for_line_after(mark, "job result recorded", WAIT)
        .await?;
    let status = stack.cli(&["status", &fleet, "--output", "json"]).await?;
    let document: serde_json::Value = serde_json::from_str(&status.stdout)?;
    assert_eq!(
        document["fleet"]["targets"][2]["state"], "succeeded",
        "{status}"
    );
    assert_eq!(
        document["fleet"]["targets"][3]["state"], "untouched",
        "{status}"
    );

    held.batch_execute("DROP TABLE public.fleet_hold").await?;
    let resumed = stack.cli(&["resume", &fleet]).await?;
    assert_eq!(resumed.code, 0, "{resumed}");
    assert!(
        resumed.stdout.contains(
            "Summary: 4 succeeded, 0 failed, 0 untouched, 0 rolled back — succeeded, exit 0"
        ),
        "{resumed}"
    );
    assert!(
        !resumed.stdout.contains("wave 1") && resumed.stdout.contains("wave 2"),
        "the settled target is not run again: {resumed}"
    );
    for (zone, target) in FLEET_TARGETS {
        let rows = ledger(&stack.connect_target(zone, target).await?).await?;
        assert_eq!(
            rows.len(),
            1,
            "applied once, never re-applied: {zone}/{target}: {rows:?}"
        );
    }
    Ok(())
}

/// The syntax gate of a fleet dry-runs on its canary before any target is
/// changed: a body PostgreSQL refuses (a table the targets lack) is refused
/// with exit 1 and every target left as it was; a good plan passes the gate
/// and goes over the fleet.
#[tokio::test]
async fn a_fleets_syntax_gate_dry_runs_on_its_canary_before_any_target_changes() -> Result<()> {
    let stack = fleet_stack().await?;
    stack.write_procedure(
        "fleet_answer.sql",
        "CREATE OR REPLACE FUNCTION public.fleet_answer() RETURNS integer LANGUAGE sql\n\
         AS $$ SELECT count(*)::integer FROM public.no_such_table $$;\n",
    )?;
    let out = stack.cli(&["deploy", "fleet_answer", "gated"]).await?;
    assert_eq!(out.code, 1, "refused by the syntax gate: {out}");
    assert!(out.to_string().contains("no_such_table"), "{out}");
    for (zone, target) in FLEET_TARGETS {
        let client = stack.connect_target(zone, target).await?;
        assert!(!has_answer(&client).await?, "{zone}/{target} untouched");
        assert!(
            ledger(&client).await?.is_empty(),
            "{zone}/{target}: no ledger row"
        );
    }

    stack.write_procedure("fleet_answer.sql", &answer_sql("v1"))?;
    let out = stack.cli(&["deploy", "fleet_answer", "gated"]).await?;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("canary: prod-us/t2"), "{out}");
    for (zone, target) in FLEET_TARGETS {
        let client = stack.connect_target(zone, target).await?;
        assert!(has_answer(&client).await?, "{zone}/{target} deployed");
    }
    Ok(())
}
