//! A bounded, seeded soak (issue 8): randomized deploys, batch deploys and
//! rollbacks, with faults injected at random points — the agent killed, the
//! link cut, the controller restarted — checking after every step that:
//!
//! - every routine's live definition is what the target's ledger last
//!   recorded for it (nothing half-applied, nothing applied unrecorded);
//! - no rollout applied a routine twice (one ledger row per rollout and routine);
//! - `pgrollout audit verify` passes;
//! - once everything is back up, no rollout is left `running` or `unknown`.
//!
//! `PGROLLOUT_SOAK_SEED` replays a run (the seed is printed); `PGROLLOUT_SOAK_STEPS`
//! sets its length (default 300).

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use pgrollout_tests::proxy::{LinkMode, Proxy};
use pgrollout_tests::{Stack, StackOptions};

const ROUTINES: [&str; 3] = ["soak_a", "soak_b", "soak_c"];
const SETTLE: Duration = Duration::from_secs(60);

fn definition(name: &str, version: u32) -> String {
    format!("CREATE OR REPLACE FUNCTION public.{name}() RETURNS integer LANGUAGE sql AS 'select {version}';\n")
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    KillAgent,
    CutLink,
    RestartController,
}

#[tokio::test]
async fn randomized_operations_with_faults_keep_every_invariant() -> Result<()> {
    let seed: u64 = match std::env::var("PGROLLOUT_SOAK_SEED") {
        Ok(seed) => seed.parse().context("PGROLLOUT_SOAK_SEED")?,
        Err(_) => fastrand::u64(..),
    };
    let steps: usize = std::env::var("PGROLLOUT_SOAK_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    println!("soak seed: {seed} ({steps} steps); replay with PGROLLOUT_SOAK_SEED={seed}");
    eprintln!("soak seed: {seed} ({steps} steps)");
    let mut rng = fastrand::Rng::with_seed(seed);

    let mut stack = Stack::start_with(StackOptions {
        deployment_extra: "job_lease = \"2s\"".into(),
        ..StackOptions::default()
    })
    .await?;
    let proxy = Proxy::start(stack.agents_port()).await?;
    stack.kill_agent("dev").await?;
    stack.route_agent_via("dev", proxy.port())?;
    stack.start_agent("dev").await?;
    for name in ROUTINES {
        stack.write_procedure(&format!("{name}.sql"), &definition(name, 0))?;
    }
    std::fs::write(stack.project.join("soak.list"), ROUTINES.join("\n"))?;
    let list = stack
        .project
        .join("soak.list")
        .to_string_lossy()
        .to_string();
    let out = stack.cli(&["batch", "dev", &list]).await?;
    ensure!(out.code == 0, "initial batch: {out}");

    let mut version = 0u32;
    for step in 0..steps {
        let fault = match rng.u32(0..100) {
            0..=3 => Fault::KillAgent,
            4..=7 => Fault::CutLink,
            8..=9 => Fault::RestartController,
            _ => Fault::None,
        };
        let operation = rng.u32(0..10);
        version += 1;
        let name = ROUTINES[rng.usize(..ROUTINES.len())];
        let args: Vec<String> = match operation {
            0..=5 => {
                stack.write_procedure(&format!("{name}.sql"), &definition(name, version))?;
                vec!["deploy".into(), name.into(), "dev".into()]
            }
            6..=7 => {
                for routine in ROUTINES {
                    stack.write_procedure(
                        &format!("{routine}.sql"),
                        &definition(routine, version),
                    )?;
                }
                vec!["batch".into(), "dev".into(), list.clone()]
            }
            _ => vec!["rollback".into(), name.into(), "dev".into()],
        };
        let label = format!("step {step} {args:?} {fault:?}");
        let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cli = stack.spawn_cli(&args_ref, &format!("step-{step}")).await?;
        let fault_after = Duration::from_millis(rng.u64(0..400));
        match fault {
            Fault::None => {}
            Fault::KillAgent => {
                tokio::time::sleep(fault_after).await;
                stack.kill_agent("dev").await?;
            }
            Fault::CutLink => {
                tokio::time::sleep(fault_after).await;
                proxy.set(LinkMode::Cut);
                proxy.set(LinkMode::Pass);
            }
            Fault::RestartController => {
                tokio::time::sleep(fault_after).await;
                stack.kill_9_and_restart_controller(|config| config).await?;
            }
        }
        let exit = cli.wait_for_exit(SETTLE).await?;
        if matches!(fault, Fault::KillAgent) {
            stack.start_agent("dev").await?;
        }
        if matches!(fault, Fault::None) {
            let code = exit.code();
            let allowed = match operation {
                // A rollback with nothing left to undo is refused (1).
                8..=9 => code == Some(0) || code == Some(1),
                _ => code == Some(0),
            };
            ensure!(allowed, "{label}: exit {code:?}\n{}", cli.output_so_far());
        }
        check_invariants(&stack, &label)
            .await
            .with_context(|| format!("after {label} (seed {seed})"))?;
    }
    println!("soak passed: {steps} steps, seed {seed}");
    Ok(())
}

async fn check_invariants(stack: &Stack, label: &str) -> Result<()> {
    // Everything is up again: the agent connected, and nothing may stay
    // running or in doubt.
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let open = rollouts_in(stack, "running").await? + rollouts_in(stack, "unknown").await?;
        let agents = stack.cli(&["agents"]).await?;
        if open == 0 && agents.stdout.contains("dev-1") {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{label}: {open} rollout(s) still running or unknown after {SETTLE:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = stack.zone("dev").pg.connect().await?;
    let drift = client
        .query(
            "SELECT l.identity FROM (
                 SELECT DISTINCT ON (identity) identity, new_definition
                 FROM pgrollout.ledger ORDER BY identity, id DESC) l
             WHERE l.new_definition IS DISTINCT FROM pg_get_functiondef(to_regprocedure(l.identity))",
            &[],
        )
        .await?;
    let drifted: Vec<String> = drift.iter().map(|row| row.get(0)).collect();
    ensure!(
        drifted.is_empty(),
        "{label}: live definition differs from the ledger for {drifted:?}"
    );
    let twice: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT rollout_id, identity FROM pgrollout.ledger
                 GROUP BY rollout_id, identity, action HAVING count(*) > 1) t",
            &[],
        )
        .await?
        .get(0);
    ensure!(twice == 0, "{label}: a rollout applied a routine twice");
    let verify = stack.cli(&["audit", "verify"]).await?;
    ensure!(verify.code == 0, "{label}: audit verify: {verify}");
    Ok(())
}

async fn rollouts_in(stack: &Stack, state: &str) -> Result<usize> {
    let out = stack
        .cli(&["rollouts", "--state", state, "--limit", "1000"])
        .await?;
    ensure!(out.code == 0, "rollouts: {out}");
    Ok(out
        .stdout
        .lines()
        .filter(|line| line.trim_start().starts_with("r-"))
        .count())
}
