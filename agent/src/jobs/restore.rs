//! Restoring a job's verified backup in one transaction: the automatic
//! rollback after a failed post-commit smoke test (SEED.md "Automatic
//! Rollback"). Each routine gets its previous definition back; one that did
//! not exist before the job is dropped; ledger rows record the restore.

use pgrollout_shared::proto::StepStatus;

use super::deploy::{error_chain, simple};
use super::{JobContext, JobFailure};
use crate::backup::{self, WrittenBackup};
use crate::sql::{self, describe_error, LedgerJob, LedgerRow, TargetConnection};

pub async fn restore_backup(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    written: &WrittenBackup,
) -> Result<(), JobFailure> {
    ctx.step("auto-rollback", restore(ctx, conn, written), |count| {
        format!(
            "{count} routine(s) restored from {}",
            written.path.display()
        )
    })
    .await
    .map(|_| ())
}

async fn restore(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    written: &WrittenBackup,
) -> Result<usize, JobFailure> {
    let path = written.path.clone();
    let verified = tokio::task::spawn_blocking(move || backup::read_and_verify(&path))
        .await
        .map_err(|e| JobFailure::deploy(format!("restore task failed: {e}")))?
        .map_err(|e| JobFailure::deploy(error_chain(&e)))?;
    simple(conn, "BEGIN").await?;
    let result = async {
        let signatures: Vec<String> = verified
            .routines
            .iter()
            .map(|r| r.requested.clone())
            .collect();
        let current = sql::snapshot_routines(&conn.client, &signatures)
            .await
            .map_err(|e| JobFailure::deploy(describe_error(&e, None)))?;
        for (before, now) in verified.routines.iter().zip(&current) {
            match (&before.definition, &now.identity) {
                (Some(definition), _) => conn.client.batch_execute(definition).await,
                (None, Some(identity)) => {
                    conn.client
                        .batch_execute(&format!("DROP ROUTINE {identity}"))
                        .await
                }
                (None, None) => Ok(()),
            }
            .map_err(|e| {
                JobFailure::deploy(format!(
                    "restoring {} failed: {}",
                    before.requested,
                    describe_error(&e, None)
                ))
            })?;
        }
        let restored = sql::snapshot_routines(&conn.client, &signatures)
            .await
            .map_err(|e| JobFailure::deploy(describe_error(&e, None)))?;
        let rows: Vec<LedgerRow<'_>> = current
            .iter()
            .zip(&restored)
            .map(|(now, after)| LedgerRow {
                identity: now.identity.as_deref().unwrap_or(&now.requested),
                change: if after.existed { "restored" } else { "dropped" },
                previous: now,
                new: after,
            })
            .collect();
        let job_id = format!("{}:auto-rollback", ctx.job.id);
        let backup_path = written.path.display().to_string();
        let job = LedgerJob {
            job_id: &job_id,
            attempt: i32::try_from(ctx.job.attempt).unwrap_or(i32::MAX),
            rollout_id: &ctx.job.rollout_id,
            plan_id: &ctx.job.plan_id,
            action: "auto-rollback",
            actor: &ctx.job.actor,
            trace_id: &ctx.job.trace.trace_id,
            commit_sha: &ctx.job.commit_sha,
            backup_path: &backup_path,
            backup_sha256: &written.sha256,
        };
        sql::insert_ledger_rows(&conn.client, &ctx.target.ledger_schema, &job, &rows)
            .await
            .map_err(|e| JobFailure::deploy(describe_error(&e, None)))?;
        Ok::<_, JobFailure>(rows.len())
    }
    .await;
    match result {
        Ok(count) => {
            simple(conn, "COMMIT").await?;
            Ok(count)
        }
        Err(failure) => {
            let _ = conn.client.batch_execute("ROLLBACK").await;
            ctx.event(
                "auto-rollback",
                StepStatus::Failed,
                &failure.message,
                0,
                Vec::new(),
            );
            Err(failure)
        }
    }
}
