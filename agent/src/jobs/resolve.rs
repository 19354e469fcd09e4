//! Jobs the agent had begun when it last stopped (a crash, kill -9, a host
//! reboot) and never finished. They are never re-run: the target's ledger
//! says whether the job's transaction committed, and that becomes the job's
//! result (DESIGN §4.4). The result goes out through the outbox like any
//! other, so the controller settles the `unknown` rollout when it arrives.

use std::sync::Arc;
use std::time::Duration;

use pgrollout_shared::job::{Job, JobKind};
use pgrollout_shared::proto::{
    agent_message::Body, AgentMessage, AppliedRoutine, JobResult, Outcome, StepStatus,
};

use super::context::{JobContext, JobFailure};
use super::steps;
use crate::config::AgentConfig;
use crate::outbox::{Interrupted, Outbox};

/// Decides an interrupted job from the target's ledger and reports it;
/// retried with backoff while the database cannot be asked.
pub async fn resolve_interrupted(
    interrupted: Interrupted,
    config: Arc<AgentConfig>,
    outbox: Arc<Outbox>,
) {
    let (job_id, attempt) = (interrupted.offer.job_id.clone(), interrupted.offer.attempt);
    let job = match Job::try_from(interrupted.offer) {
        Ok(job) => job,
        Err(invalid) => {
            // It was valid when accepted; a journal from another version.
            tracing::error!(job_id = %job_id, %invalid, "cannot read an interrupted job from the journal");
            outbox.job_finished(&job_id, attempt);
            return;
        }
    };
    let Some(target) = config.target(&job.target).cloned() else {
        let message = format!(
            "the agent restarted during this job and no longer serves target {:?}: it cannot tell whether the \
             job committed; check that target's ledger for job {job_id}",
            job.target
        );
        outbox.push(AgentMessage {
            body: Some(Body::Result(JobResult {
                job_id: job_id.clone(),
                attempt,
                seq: interrupted.last_seq + 1,
                outcome: Outcome::DeployFailed as i32,
                message,
                ..Default::default()
            })),
        });
        outbox.job_finished(&job_id, attempt);
        return;
    };
    let context = JobContext::new(job, target, interrupted.last_seq, config, outbox.clone());
    tracing::warn!(job_id = %job_id, kind = context.job.kind.name(), "resolving a job interrupted by an agent restart");
    let mut backoff = Duration::from_secs(1);
    let result = loop {
        match resolve(&context).await {
            Ok(result) => break result,
            Err(failure) => {
                tracing::warn!(job_id = %job_id, error = %pgrollout_shared::errors::error_chain(&failure), retry_in_s = backoff.as_secs(), "cannot resolve the interrupted job yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    context.finish(result.into());
    outbox.job_finished(&job_id, attempt);
}

async fn resolve(ctx: &JobContext) -> Result<JobResult, JobFailure> {
    ctx.event(
        "resolve",
        StepStatus::Started,
        "the agent restarted during this job; the target's ledger decides what happened",
        0,
        Vec::new(),
    );
    let read_only = matches!(
        ctx.job.kind,
        JobKind::Smoke { .. } | JobKind::History(_) | JobKind::AuditAnchors | JobKind::Drift { .. }
    );
    if read_only {
        return Ok(JobResult {
            outcome: Outcome::DeployFailed as i32,
            message: "interrupted by an agent restart; this job only reads, so nothing changed: run it again"
                .into(),
            ..Default::default()
        });
    }
    let conn = steps::connect(ctx).await?;
    // The advisory lock is held by the interrupted job's session until
    // PostgreSQL notices its client is gone and rolls it back: once we hold
    // it, that transaction has either committed or never will.
    steps::lock(ctx, &conn).await?;
    let recorded = steps::already_done(ctx, &conn)
        .await?
        .map(steps::Replayed::into_result);
    let piecewise =
        matches!(&ctx.job.kind, JobKind::Deploy { batch, .. } if batch.continue_on_error);
    let result = match recorded {
        None => JobResult {
            outcome: Outcome::DeployFailed as i32,
            message: format!(
                "the agent restarted before job {} committed; PostgreSQL rolled its transaction back and the \
                 ledger has no row for it: nothing changed",
                ctx.job.id
            ),
            ..Default::default()
        },
        Some(mut recorded) if piecewise => {
            recorded.outcome = Outcome::DeployFailed as i32;
            recorded.message = format!(
                "the agent restarted mid-batch: {} routine(s) committed before it are in the ledger, the rest were \
                 not applied",
                recorded.ledger_ids.len()
            );
            recorded
        }
        Some(mut recorded) => {
            recorded.message = format!(
                "the agent restarted after job {} committed; the ledger records it ({} row(s))",
                ctx.job.id,
                recorded.ledger_ids.len()
            );
            recorded.warnings.push(
                "the post-commit checks did not run after the restart: run `pgrollout smoke` on this environment"
                    .into(),
            );
            what_committed(ctx, &conn, &mut recorded).await?;
            recorded
        }
    };
    ctx.event(
        "resolve",
        StepStatus::Succeeded,
        result.message.clone(),
        0,
        Vec::new(),
    );
    Ok(result)
}

/// Fills in what the ledger knows of a job that committed before the agent
/// restarted: each routine's change and the backup it wrote (read back and
/// checked against the ledger's SHA-256, as a rollback would), and for a
/// deploy what is known of its smoke tests. This job did change the target,
/// so it is not reported as a redelivery that changed nothing.
async fn what_committed(
    ctx: &JobContext,
    conn: &crate::sql::TargetConnection,
    recorded: &mut JobResult,
) -> Result<(), JobFailure> {
    let rows = crate::sql::job_record(&conn.client, &ctx.target.ledger_schema, &ctx.job.id)
        .await
        .map_err(|e| steps::database("ledger lookup failed", e))?;
    recorded.replayed_from_ledger = false;
    recorded.applied = rows
        .iter()
        .map(|row| AppliedRoutine {
            identity: row.identity.clone(),
            change: row.change.clone(),
            new_sha256: row.new_sha256.clone(),
            previous_sha256: String::new(),
        })
        .collect();
    if let Some((path, sha256)) = rows.iter().find_map(|row| row.backup.clone()) {
        let file = std::path::PathBuf::from(&path);
        let verified = tokio::task::spawn_blocking(move || crate::backup::read_and_verify(&file))
            .await
            .map_err(|e| JobFailure::deploy(format!("backup check failed: {e}")))?;
        match verified {
            Ok(backup) if backup.sha256 == sha256 => {
                recorded.backup_path = path;
                recorded.backup_sha256 = sha256;
            }
            Ok(backup) => recorded.warnings.push(format!(
                "the ledger names backup {path} (sha256 {sha256}), but that file now has sha256 {}",
                backup.sha256
            )),
            Err(error) => recorded.warnings.push(format!(
                "the ledger names backup {path} (sha256 {sha256}), which cannot be verified: {error}"
            )),
        }
    }
    let smoke_ran = rows.iter().any(|row| row.change != "unchanged");
    if matches!(ctx.job.kind, JobKind::Deploy { .. }) && smoke_ran {
        recorded.smoke_incomplete = "the smoke tests in the transaction passed (it committed only \
                                     after them); the post-commit smoke test never completed (the agent \
                                     restarted); run `pgrollout smoke` to run it now"
            .into();
    }
    Ok(())
}
