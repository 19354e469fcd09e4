//! Job execution, in layers (each imports only the ones below it):
//!
//! - `mod.rs` (this file): runs a job to its result under its deadline and
//!   lease, dispatching on its kind;
//! - the job kinds: `deploy/` (with `--continue-on-error`, retire, the
//!   pgTAP and perf checks after it), `smoke_job.rs`, `rollback.rs`,
//!   `disable.rs`, `history.rs`, `check.rs`, `perf_probe.rs`,
//!   `watch_sample.rs`, `audit_anchors.rs`, `drift/`, `adopt.rs`, `resolve.rs` — they depend on the
//!   layers below, never on each other;
//! - `reversal/`: restoring earlier definitions, shared by a rollback and a
//!   deploy's automatic restore;
//! - `deployed_sql.rs`: with `[approvals]`, a smoke job's or watch probe's
//!   SQL must be the smoke tests of the plan in force (issue 19);
//! - `steps/`: each step of a job once — connect, lock, idempotency, backup,
//!   the single-statement runner, apply, the smoke step;
//! - `smoke/`: the smoke tests themselves (`runner` → `pipeline` → `checks`);
//! - `context/`: the job context, its events, failure type, lease and
//!   transaction seal.

mod adopt;
mod audit_anchors;
mod check;
mod context;
mod deploy;
mod deployed_sql;
mod disable;
mod drift;
mod history;
mod perf_probe;
mod resolve;
mod reversal;
mod rollback;
mod smoke;
mod smoke_job;
mod steps;
mod watch_sample;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use pgrollout_shared::job::{Job, JobKind};
use pgrollout_shared::proto::{JobResult, Outcome, StepStatus};
use tracing::Instrument;

use crate::config::AgentConfig;
use crate::outbox::Outbox;
use context::{millis, Finished, JobContext};

pub use context::EarlyConnection;

pub use resolve::resolve_interrupted;

/// Runs a validated job to its result, bounded by its deadline and fenced by
/// its lease. Dropping the work at either drops its database connection,
/// which rolls back any open transaction.
pub async fn execute(
    job: Job,
    last_seq: u64,
    config: Arc<AgentConfig>,
    outbox: Arc<Outbox>,
    early: EarlyConnection,
) {
    let Some(target) = config.target(&job.target).cloned() else {
        // The link checks this before accepting; kept for safety.
        outbox.job_finished(&job.id, job.attempt);
        return;
    };
    let context =
        JobContext::new(job, target, last_seq, config, outbox.clone()).with_early_connection(early);
    let reserved = match check_approvals(&context) {
        Ok(reserved) => reserved,
        Err(refused) => {
            context.finish((*refused).into());
            outbox.job_finished(&context.job.id, context.job.attempt);
            return;
        }
    };
    tracing::info!(
        job_id = %context.job.id,
        kind = context.job.kind.name(),
        target = %context.target.name,
        trace_id = %context.job.trace.trace_id,
        "job started"
    );
    let budget = context
        .job
        .deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let work = async {
        match &context.job.kind {
            JobKind::Deploy { routines, batch } => {
                let mut finished = deploy::run(&context, routines, batch).await;
                deploy::after_deploy::run(&context, routines, batch, &mut finished.result).await;
                finished
            }
            JobKind::Smoke { routines, sources } => {
                smoke_job::run(&context, routines, sources).await
            }
            JobKind::Rollback(spec) => rollback::run(&context, spec).await,
            JobKind::Disable(spec) => disable::run(&context, spec).await,
            JobKind::Enable(selector) => disable::enable(&context, selector).await,
            JobKind::History(selector) => history::run(&context, selector).await,
            JobKind::WatchSample(spec) => watch_sample::run(&context, spec).await,
            JobKind::Check { routines } => check::run(&context, routines).await,
            JobKind::PerfProbe { routines, targets } => {
                perf_probe::run(&context, routines, targets).await
            }
            JobKind::AuditAnchors => audit_anchors::run(&context).await,
            JobKind::Drift { names } => drift::run(&context, names).await,
            JobKind::Adopt(spec) => adopt::run(&context, spec).await,
        }
    };
    let work = work.instrument(context.job_span().clone());
    let finished = tokio::select! {
        finished = tokio::time::timeout(budget, work) => match finished {
            Ok(finished) => finished,
            Err(_) => {
                context.cancel_queries().await;
                Finished::from(JobResult {
                outcome: Outcome::DeployFailed as i32,
                message: format!(
                    "job deadline reached after {:.1}s; the open transaction was rolled back",
                    budget.as_secs_f64()
                ),
                ..Default::default()
            })},
        },
        silent = context.fenced() => {
            tracing::warn!(job_id = %context.job.id, silent_ms = silent.as_millis() as u64, "job fenced: lease expired");
            context.cancel_queries().await;
            Finished::from(JobResult {
                outcome: Outcome::DeployFailed as i32,
                message: context.fenced_message(silent),
                ..Default::default()
            })
        }
    };
    if matches!(context.job.kind, JobKind::Deploy { .. })
        && finished.result.outcome() == Outcome::Succeeded
        && !finished.result.backup_path.is_empty()
    {
        apply_retention(&context, &finished.result.backup_path).await;
    }
    if let Some(record) = reserved {
        release_if_unchanged(&context, &record, &finished.result);
    }
    context.finish(finished);
    outbox.job_finished(&context.job.id, context.job.attempt);
    // The job span ends here; export the job's spans now rather than at the
    // exporter's next tick, so the rollout's trace is complete moments after
    // its result.
    drop(context);
    pgrollout_shared::telemetry::flush_soon();
}

/// Verifies the job's signed approvals when the agent has a policy (issue
/// 19), before anything connects to the database, then reserves its signed
/// request for this target (a replay is refused); reports the verdict as the
/// `approvals` step. A refusal is the job's result: exit 1, nothing changed,
/// and the controller audits it with the job. `Ok(Some(record))`: where
/// the request was reserved.
fn check_approvals(context: &JobContext) -> Result<Option<Reserved>, Box<JobResult>> {
    use crate::approvals::{check, Verdict};
    use pgrollout_shared::signing::{replay, verify::Refusal};
    let started = Instant::now();
    let verdict = check(
        context.config.approval_policy.as_ref(),
        &context.config.zone,
        &context.job,
        SystemTime::now(),
    );
    let (verdict, record) = match verdict {
        Verdict::Approved(approved, resume) if !crate::approvals::runs_once(&context.job.kind) => {
            (Verdict::Approved(approved, resume), None)
        }
        Verdict::Approved(approved, resume) => {
            let path = replay::path_for(&context.config.journal_path());
            match reserve(context, &path, resume.as_deref()) {
                Ok(()) => (Verdict::Approved(approved, resume), Some(Reserved { path })),
                Err(replay) => (Verdict::Refused(Refusal(replay)), None),
            }
        }
        other => (other, None),
    };
    let elapsed = started.elapsed();
    match verdict {
        Verdict::NotRequired => Ok(None),
        Verdict::Approved(approved, _) => {
            tracing::info!(job_id = %context.job.id, verify_us = elapsed.as_micros() as u64, "approvals verified: {approved}");
            context.event(
                "approvals",
                StepStatus::Succeeded,
                format!("signatures verified: {approved}"),
                millis(elapsed),
                Vec::new(),
            );
            Ok(record)
        }
        Verdict::Refused(refusal) => {
            tracing::warn!(job_id = %context.job.id, reason = %refusal, "job refused");
            crate::refusals::keep_for_job(
                &context.config,
                &context.job,
                context.controller(),
                &refusal.to_string(),
            );
            context.event(
                "approvals",
                StepStatus::Failed,
                refusal.to_string(),
                millis(elapsed),
                Vec::new(),
            );
            Err(Box::new(JobResult {
                outcome: Outcome::ValidationFailed as i32,
                message: refusal.to_string(),
                ..Default::default()
            }))
        }
    }
}

/// Where a signed job's request was reserved. (A fleet resume's own request
/// stays reserved: a resume that changed nothing is signed anew to retry.)
struct Reserved {
    path: std::path::PathBuf,
}

/// Reserves the job's request for its target (a replay is refused); a
/// fleet's deploy that ran here before (failed, changed nothing) runs again
/// only with an operator's signed `resume`, itself reserved once per target.
fn reserve(
    context: &JobContext,
    path: &std::path::Path,
    resume: Option<&str>,
) -> Result<(), String> {
    use pgrollout_shared::signing::replay;
    let job = &context.job;
    let request = &job.approvals.request_id;
    let fleet_deploy =
        !job.approvals.fleet_members.is_empty() && matches!(job.kind, JobKind::Deploy { .. });
    if fleet_deploy && resume.is_none() {
        if let Some(before) = replay::ran_before(path, &job.target, request, &job.id)? {
            return Err(format!(
                "request {request} already ran on target {} (job {before}) and changed nothing: a fleet's \
                 deploy runs again on a target only with the resume signed by the operator who runs \
                 `pgrollout resume`",
                job.target
            ));
        }
    }
    if let Some(resume) = resume {
        replay::reserve(path, &job.target, resume, &job.id, job.attempt)?;
    }
    replay::reserve(path, &job.target, request, &job.id, job.attempt)
}

/// A signed job that changed nothing (not a success, no ledger row) gives
/// its request back, so the same approvals can run it again (a fleet's
/// deploy: with a new signed resume).
fn release_if_unchanged(context: &JobContext, record: &Reserved, result: &JobResult) {
    if result.outcome() == Outcome::Succeeded || !result.ledger_ids.is_empty() {
        return;
    }
    let job = &context.job;
    pgrollout_shared::signing::replay::release(
        &record.path,
        &job.target,
        &job.approvals.request_id,
        &job.id,
        job.attempt,
    );
}

/// Prunes the target's expired backups after a successful deploy; a problem
/// here is reported as a failed step but never changes the deploy's outcome.
async fn apply_retention(context: &JobContext, new_backup: &str) {
    let days = context.job.backup_retention_days;
    if days == 0 {
        return;
    }
    let keep = std::path::PathBuf::from(new_backup);
    let Some(dir) = keep.parent().map(std::path::Path::to_path_buf) else {
        return;
    };
    let started = Instant::now();
    let pruned = tokio::task::spawn_blocking(move || {
        crate::backup::retention::prune(&dir, days, &keep, SystemTime::now())
    })
    .await;
    let elapsed = millis(started.elapsed());
    match pruned {
        Ok(Ok(removed)) => context.event(
            "retention",
            StepStatus::Succeeded,
            format!("{removed} backup(s) older than {days} day(s) removed"),
            elapsed,
            Vec::new(),
        ),
        Ok(Err(error)) => context.event(
            "retention",
            StepStatus::Failed,
            format!("backups not pruned: {error}"),
            elapsed,
            Vec::new(),
        ),
        Err(error) => context.event(
            "retention",
            StepStatus::Failed,
            format!("backups not pruned: {error}"),
            elapsed,
            Vec::new(),
        ),
    }
}
