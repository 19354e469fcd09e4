//! Backup writing, once for every job: the current state of the routines a
//! job is about to touch, in one verified file, before the first change.

use std::time::SystemTime;

use super::statement::database;
use crate::backup::{self, BackupHeader, WrittenBackup};
use crate::jobs::context::{JobContext, JobFailure};
use crate::sql::{self, RoutineSnapshot, TargetConnection};

/// Writes `snapshots` as the backup file of `job_id` (temp, fsync, rename,
/// verified), off the async threads. No backup, no change: a failure here
/// stops the job before anything changed.
pub async fn write(
    ctx: &JobContext,
    job_id: &str,
    snapshots: Vec<RoutineSnapshot>,
) -> Result<WrittenBackup, JobFailure> {
    let header = BackupHeader {
        job_id: job_id.to_owned(),
        attempt: ctx.job.attempt,
        rollout_id: ctx.job.rollout_id.clone(),
        plan_id: ctx.job.plan_id.clone(),
        target: ctx.target.name.clone(),
        label: ctx.job.label.clone(),
        taken_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    };
    let dir = ctx.config.backup_dir.clone();
    tokio::task::spawn_blocking(move || backup::write_backup(&dir, &header, &snapshots))
        .await
        .map_err(|e| JobFailure::deploy(format!("backup task failed: {e}")))?
        .map_err(JobFailure::backup)
}

/// The `backup` step of the jobs that reverse changes (rollback, disable,
/// enable): the routines' current state read and written. `job_id` names the
/// file: the automatic rollback passes its own (`<deploy job>:auto-rollback`),
/// so its backup never replaces the deploy's.
pub async fn backup(
    ctx: &JobContext,
    conn: &TargetConnection,
    job_id: &str,
    identities: &[String],
) -> Result<(Vec<RoutineSnapshot>, WrittenBackup), JobFailure> {
    let work = async {
        let snapshots = sql::snapshot_routines(&conn.client, identities)
            .await
            .map_err(|e| database("cannot read the current definitions", e))?;
        let written = write(ctx, job_id, snapshots.clone()).await?;
        Ok((snapshots, written))
    };
    ctx.step("backup", work, |(_, written)| {
        format!(
            "{} (sha256 {}) verified",
            written.path.display(),
            written.sha256
        )
    })
    .await
}
