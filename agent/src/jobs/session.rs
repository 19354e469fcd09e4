//! The opening steps every changing job shares with a deploy — connect, take
//! the per-target lock, check the ledger for an earlier delivery — and the
//! backup taken before anything changes, for the jobs that reverse changes
//! (rollback, disable, enable). Kept apart from `deploy.rs` so the two can
//! evolve separately; the lock key is the deploy's, so they serialise.

use std::time::SystemTime;

use pgrollout_shared::proto::{JobResult, Outcome, SmokeReport};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use super::deploy::{error_chain, DEPLOY_LOCK_KEY};
use super::{JobContext, JobFailure};
use crate::backup::{self, BackupHeader, WrittenBackup};
use crate::sql::{self, describe_error, RoutineSnapshot, TargetConnection};

/// A job that stopped before its result: why, and what it found so far.
#[derive(Debug)]
pub struct Stopped {
    pub failure: JobFailure,
    pub smoke: Vec<SmokeReport>,
    pub warnings: Vec<String>,
}

impl From<JobFailure> for Stopped {
    fn from(failure: JobFailure) -> Self {
        Stopped {
            failure,
            smoke: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

impl Stopped {
    pub fn into_result(self) -> JobResult {
        JobResult {
            outcome: self.failure.outcome as i32,
            message: self.failure.message,
            smoke: self.smoke,
            warnings: self.warnings,
            ..Default::default()
        }
    }
}

/// Refused before anything changed (exit 1).
pub fn refused(message: impl Into<String>) -> JobFailure {
    JobFailure {
        outcome: Outcome::ValidationFailed,
        message: message.into(),
    }
}

/// A database error as a failure during execution (exit 2).
pub fn database(what: &str, error: &tokio_postgres::Error) -> JobFailure {
    JobFailure::deploy(format!("{what}: {}", describe_error(error, None)))
}

/// When this job must stop on its own, a little before the deadline the
/// controller gave it, so that it can still say what state it left.
pub fn own_deadline(ctx: &JobContext) -> tokio::time::Instant {
    let remaining = ctx
        .job
        .deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let margin = (remaining / 10).min(std::time::Duration::from_secs(2));
    tokio::time::Instant::now() + remaining.saturating_sub(margin)
}

pub async fn connect(ctx: &JobContext) -> Result<TargetConnection, JobFailure> {
    let conn = ctx
        .step(
            "connect",
            async {
                sql::connect(&ctx.target, &ctx.config.timeouts)
                    .await
                    .map_err(JobFailure::connect)
            },
            |conn| super::connected(&ctx.target, conn),
        )
        .await?;
    ctx.watch_connection(&conn);
    Ok(conn)
}

/// The deploy's advisory lock: a rollback never interleaves with a deploy.
pub async fn lock(ctx: &JobContext, conn: &TargetConnection) -> Result<(), JobFailure> {
    let work = async {
        match conn
            .client
            .execute_typed("SELECT pg_advisory_lock($1)", &[(&DEPLOY_LOCK_KEY, Type::INT8)])
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                Err(JobFailure::deploy(format!(
                    "another rollout holds the deploy lock on target {} (waited {}); nothing was changed; try again \
                     when it finishes",
                    ctx.target.name,
                    humantime::format_duration(ctx.config.timeouts.lock)
                )))
            }
            Err(error) => Err(database("cannot take the deploy lock", &error)),
        }
    };
    ctx.step("lock", work, |_| "deploy lock held".into()).await
}

/// A redelivered job: its ledger rows are the proof it ran, so report them.
pub async fn already_done(
    ctx: &JobContext,
    conn: &TargetConnection,
) -> Result<Option<JobResult>, JobFailure> {
    let recorded = ctx
        .step(
            "idempotency",
            async {
                sql::find_job_in_ledger(&conn.client, &ctx.target.ledger_schema, &ctx.job.id)
                    .await
                    .map_err(|e| database("ledger lookup failed", &e))
            },
            |rows| match rows.len() {
                0 => "job not yet applied".into(),
                n => format!("job already applied ({n} ledger rows): reporting, not re-applying"),
            },
        )
        .await?;
    if recorded.is_empty() {
        return Ok(None);
    }
    Ok(Some(JobResult {
        outcome: Outcome::Succeeded as i32,
        message: "already applied by an earlier delivery of this job; nothing changed".into(),
        replayed_from_ledger: true,
        ledger_ids: recorded.iter().map(|(id, _, _)| *id).collect(),
        ..Default::default()
    }))
}

/// No backup, no change: the current state of every routine the job is
/// about to touch, in one verified file, before the first change. `job_id`
/// names the file: the automatic rollback passes its own
/// (`<deploy job>:auto-rollback`), so its backup never replaces the deploy's.
pub async fn backup(
    ctx: &JobContext,
    conn: &TargetConnection,
    job_id: &str,
    identities: &[String],
) -> Result<(Vec<RoutineSnapshot>, WrittenBackup), JobFailure> {
    let work = async {
        let snapshots = sql::snapshot_routines(&conn.client, identities)
            .await
            .map_err(|e| database("cannot read the current definitions", &e))?;
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
        let to_write = snapshots.clone();
        let written =
            tokio::task::spawn_blocking(move || backup::write_backup(&dir, &header, &to_write))
                .await
                .map_err(|e| JobFailure::deploy(format!("backup task failed: {e}")))?
                .map_err(|e| {
                    JobFailure::deploy(format!(
                        "backup failed, nothing was changed: {}",
                        error_chain(&e)
                    ))
                })?;
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

pub async fn simple(conn: &TargetConnection, statement: &str) -> Result<(), JobFailure> {
    conn.client
        .batch_execute(statement)
        .await
        .map_err(|e| database(&format!("{statement} failed"), &e))
}
