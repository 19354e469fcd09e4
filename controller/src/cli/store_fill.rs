//! `pgrollout store-fill` (hidden; issue 17's history benchmark and its test):
//! fills a controller's store with synthetic history through the store's own
//! API — plans, rollouts, jobs, events, results and a hash-chained, signed
//! audit log — exactly as `serve` writes them, never with raw SQL. The
//! routines it invents (`bench_fill_<n>`) never collide with a project's.

use std::path::PathBuf;

use pgrollout_shared::exit_code::ExitCode;
use pgrollout_shared::proto::{
    AppliedRoutine, JobEvent, JobResult, Outcome, Plan, Routine, RoutineOutcome, StepStatus,
};
use sha2::{Digest, Sha256};

use crate::config::ControllerConfig;
use crate::domain::agent_report::ReportedResult;
use crate::store::{AuditEntry, NewRollout, Store, StoreError};

#[derive(clap::Args)]
pub struct StoreFillArgs {
    /// The controller's config: its store and audit key are filled.
    #[arg(long)]
    config: PathBuf,
    /// Environment the rollouts ran in.
    #[arg(long)]
    environment: String,
    /// Rollouts to add.
    #[arg(long, default_value_t = 1000)]
    rollouts: u64,
    /// Every n-th rollout is a batch of --batch-size routines (0: none).
    #[arg(long, default_value_t = 1000)]
    batch_every: u64,
    #[arg(long, default_value_t = 1000)]
    batch_size: u64,
    /// Routines of an ordinary rollout.
    #[arg(long, default_value_t = 4)]
    routines: u64,
    /// Distinct routine names the rollouts cycle through.
    #[arg(long, default_value_t = 5000)]
    names: u64,
    /// Bytes of each routine's CREATE statement (padded with a comment).
    #[arg(long, default_value_t = 2000)]
    routine_bytes: usize,
    /// Audit entries to append (besides none for the rollouts).
    #[arg(long, default_value_t = 0)]
    audit: u64,
}

pub async fn run(args: StoreFillArgs) -> ExitCode {
    let config = match ControllerConfig::load(&args.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("pgrollout store-fill: {error:#}");
            return ExitCode::ValidationFailed;
        }
    };
    let store = match Store::open_configured(&config.store, &config.audit_key_path()) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("pgrollout store-fill: {:#}", anyhow::Error::from(error));
            return ExitCode::DeploymentFailed;
        }
    };
    match fill(&store, &args).await {
        Ok(()) => ExitCode::Success,
        Err(error) => {
            eprintln!("pgrollout store-fill: {:#}", anyhow::Error::from(error));
            ExitCode::DeploymentFailed
        }
    }
}

async fn fill(store: &Store, args: &StoreFillArgs) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let now = pgrollout_shared::job::now_unix_ms();
    // Spread over the past, a minute apart, so every real rollout is newer.
    let first = now - i64::try_from(args.rollouts + 1).unwrap_or(0) * 60_000;
    for index in 0..args.rollouts {
        let at = first + i64::try_from(index).unwrap_or(0) * 60_000;
        let size = if args.batch_every > 0 && (index + 1) % args.batch_every == 0 {
            args.batch_size
        } else {
            args.routines
        };
        rollout(store, args, index, size, at).await?;
        if (index + 1) % 10_000 == 0 {
            eprintln!(
                "store-fill: {} rollouts in {:.1}s",
                index + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    const CHUNK: u64 = 10_000;
    let mut appended = 0;
    while appended < args.audit {
        let count = CHUNK.min(args.audit - appended);
        let entries = (appended..appended + count)
            .map(|n| {
                // Spread over the same past as the rollouts.
                let span = i128::from(now - first);
                let at = first + (span * i128::from(n) / i128::from(args.audit)) as i64;
                (at, audit_entry(args, n))
            })
            .collect();
        store.audit_batch(entries).await?;
        appended += count;
    }
    eprintln!(
        "store-fill: {} rollouts and {} audit entries added in {:.1}s",
        args.rollouts,
        args.audit,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn rollout(
    store: &Store,
    args: &StoreFillArgs,
    index: u64,
    size: u64,
    at: i64,
) -> Result<(), StoreError> {
    let routines: Vec<Routine> = (0..size)
        .map(|k| routine(args, (index * args.routines + k) % args.names.max(1), index))
        .collect();
    let plan_id = hex::encode(Sha256::digest(format!("store-fill\n{index}")));
    let plan = Plan {
        plan_id: plan_id.clone(),
        commit_sha: format!("{:040x}", index),
        label: routines.first().map(|r| r.name.clone()).unwrap_or_default(),
        routines,
    };
    store.save_plan(&plan, at).await?;
    let (rollout_id, job_id) = (format!("r-fill-{index}"), format!("j-fill-{index}"));
    store
        .create_rollout(
            NewRollout {
                id: &rollout_id,
                plan_id: &plan_id,
                kind: "deploy",
                environment: &args.environment,
                zone: &args.environment,
                target: "main",
                actor: "operator store-fill",
                trace_id: &format!("{:032x}", index),
                created_at: at,
            },
            &job_id,
            1,
        )
        .await?;
    store
        .claim_job(&job_id, 1, "store-fill", &args.environment, at)
        .await?;
    for (seq, step) in ["connect", "lock", "backup", "apply", "commit"]
        .iter()
        .enumerate()
    {
        store
            .record_event(&JobEvent {
                job_id: job_id.clone(),
                attempt: 1,
                seq: seq as u64 + 1,
                step: (*step).into(),
                status: StepStatus::Succeeded as i32,
                message: format!("{step} done"),
                duration_ms: 3,
                at_unix_ms: at + seq as i64,
                ..Default::default()
            })
            .await?;
    }
    let sha = |r: &Routine| hex::encode(Sha256::digest(r.create_sql.as_bytes()));
    let result = JobResult {
        job_id: job_id.clone(),
        attempt: 1,
        // After the five events.
        seq: 6,
        outcome: Outcome::Succeeded as i32,
        message: "deployed".into(),
        duration_ms: 40,
        applied: plan
            .routines
            .iter()
            .map(|r| AppliedRoutine {
                identity: format!("{}.{}({})", r.schema, r.name, r.arg_types.join(", ")),
                change: "replaced".into(),
                new_sha256: sha(r),
                previous_sha256: String::new(),
            })
            .collect(),
        routines: plan
            .routines
            .iter()
            .map(|r| RoutineOutcome {
                identity: format!("{}.{}({})", r.schema, r.name, r.arg_types.join(", ")),
                status: "deployed".into(),
                duration_ms: 1,
                duration_us: 1_000,
                error: String::new(),
            })
            .collect(),
        ..Default::default()
    };
    // A result as the link records one: checked at the edge first (a
    // literal that fails its check would be a bug of this tool).
    let Ok(result) = ReportedResult::try_from(result) else {
        unreachable!("store-fill builds a sound result");
    };
    store.finish_job(&result, at + 40).await?;
    Ok(())
}

/// A valid SQL function, padded to about `routine_bytes`; its body differs
/// per rollout, so each deploy is a new version.
fn routine(args: &StoreFillArgs, name: u64, version: u64) -> Routine {
    let body = format!("SELECT $1 + {version}");
    let pad = args.routine_bytes.saturating_sub(body.len() + 120);
    let create_sql = format!(
        "CREATE OR REPLACE FUNCTION public.bench_fill_{name}(integer) RETURNS integer LANGUAGE sql AS $$ {body} /* {} */ $$",
        "x".repeat(pad)
    );
    Routine {
        schema: "public".into(),
        name: format!("bench_fill_{name}"),
        arg_types: vec!["integer".into()],
        create_sql,
        source_path: format!("procedures/bench_fill_{name}.sql"),
        search_path: vec!["public".into()],
        ..Default::default()
    }
}

fn audit_entry(args: &StoreFillArgs, n: u64) -> AuditEntry {
    AuditEntry {
        actor: "operator store-fill".into(),
        action: "deploy.started".into(),
        outcome: "ok".into(),
        rollout_id: Some(format!("r-fill-{}", n % args.rollouts.max(1))),
        environment: Some(args.environment.clone()),
        procedure: Some(format!("bench_fill_{}", n % args.names.max(1))),
        trace_id: Some(format!("{n:032x}")),
        details: format!("synthetic history entry {n}"),
    }
}
