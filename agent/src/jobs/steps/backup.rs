//! Backup writing, once for every job: the current state of the routines a
//! job is about to touch, in one verified file, before the first change.

use std::time::{Instant, SystemTime};

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
    start_write(ctx, job_id, snapshots).finish().await
}

/// A backup file being written and verified on a blocking thread, started
/// by [`start_write`]; [`PendingBackup::finish`] waits for it.
pub struct PendingBackup {
    writing: tokio::task::JoinHandle<(Result<WrittenBackup, backup::BackupError>, Instant)>,
}

impl PendingBackup {
    /// The written, verified backup, or why there is none.
    pub async fn finish(self) -> Result<WrittenBackup, JobFailure> {
        self.finish_timed().await.0
    }

    /// [`PendingBackup::finish`], with when the file was verified (or the
    /// write failed): the backup's own end, however long its caller's other
    /// work kept it from looking.
    pub async fn finish_timed(self) -> (Result<WrittenBackup, JobFailure>, Instant) {
        match self.writing.await {
            Ok((written, at)) => (written.map_err(JobFailure::backup), at),
            Err(e) => (
                Err(JobFailure::deploy(format!("backup task failed: {e}"))),
                Instant::now(),
            ),
        }
    }
}

/// Starts writing `snapshots` as the backup file of `job_id` at once, on a
/// blocking thread, so that the caller's database work can go on meanwhile.
/// The file's writing and verification (two fsyncs and a read back) take
/// their time on the disk, not the database's.
pub fn start_write(
    ctx: &JobContext,
    job_id: &str,
    snapshots: Vec<RoutineSnapshot>,
) -> PendingBackup {
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
    PendingBackup {
        writing: tokio::task::spawn_blocking(move || {
            (
                backup::write_backup(&dir, &header, &snapshots),
                Instant::now(),
            )
        }),
    }
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
