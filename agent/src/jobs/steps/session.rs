//! The opening steps every job that touches a target shares — connect, take
//! the per-target deploy lock, check the ledger for an earlier delivery of
//! the job — and the time limit a job sets itself. One of each: a deploy, a
//! dry run, a rollback and a disable open the same way, with the same texts.

use std::time::SystemTime;

use pgrollout_shared::proto::{AppliedRoutine, JobResult, Outcome};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use super::statement::database;
use crate::jobs::context::{connected, JobContext, JobFailure};
use crate::sql::{self, TargetConnection};

pub use crate::jobs::context::deploy_lock::DEPLOY_LOCK_KEY;

/// The `connect` step: a connection to the job's target (the one opened
/// early for it, `context/early_connection.rs`, when there is one), watched
/// so that abandoning the job cancels what it runs.
pub async fn connect(ctx: &JobContext) -> Result<TargetConnection, JobFailure> {
    let conn = ctx
        .step(
            "connect",
            async {
                // The connection the link started opening with the job,
                // else one opened now.
                let opened = match ctx.take_early_connection().take().await {
                    Some(opened) => opened,
                    None => sql::connect(&ctx.target, &ctx.config.timeouts).await,
                };
                opened.map_err(JobFailure::connect)
            },
            |conn| connected(&ctx.target, conn),
        )
        .await?;
    ctx.watch_connection(&conn);
    Ok(conn)
}

/// The `lock` step: the deploy's advisory lock, waited for up to
/// `timeouts.lock` (the connection's `lock_timeout`).
pub async fn lock(ctx: &JobContext, conn: &TargetConnection) -> Result<(), JobFailure> {
    ctx.step("lock", take_deploy_lock(ctx, conn), |_| {
        "deploy lock held".into()
    })
    .await
}

/// The deploy lock without a step of its own (the checks after a deploy
/// take it inside theirs).
pub async fn take_deploy_lock(ctx: &JobContext, conn: &TargetConnection) -> Result<(), JobFailure> {
    match conn
        .client
        .execute_typed("SELECT pg_advisory_lock($1)", &[(&DEPLOY_LOCK_KEY, Type::INT8)])
        .await
    {
        Ok(_) => {
            conn.set_holds_deploy_lock();
            Ok(())
        }
        // Told in the agent's words; the span still carries the server's
        // 55P03 (lock_timeout).
        Err(error) if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            Err(JobFailure::deploy(format!(
                "another rollout holds the deploy lock on target {} (waited {}); nothing was changed; try again \
                 when it finishes",
                ctx.target.name,
                humantime::format_duration(ctx.config.timeouts.lock)
            ))
            .with_sql_state(error.code()))
        }
        Err(error) => Err(database("cannot take the deploy lock", error)),
    }
}

/// A redelivered job's ledger rows: the proof it ran.
pub struct Replayed {
    /// (ledger id, routine identity, new SHA-256) of each row.
    rows: Vec<(i64, String, String)>,
}

impl Replayed {
    /// The report of a job that changes routines other than by a deploy: its
    /// ledger ids.
    pub fn into_result(self) -> JobResult {
        JobResult {
            outcome: Outcome::Succeeded as i32,
            message: "already applied by an earlier delivery of this job; nothing changed".into(),
            replayed_from_ledger: true,
            ledger_ids: self.rows.iter().map(|(id, _, _)| *id).collect(),
            ..Default::default()
        }
    }

    /// A deploy's report: its ledger ids and each routine it applied.
    pub fn into_deploy_result(self) -> JobResult {
        let applied = self
            .rows
            .iter()
            .map(|(_, identity, new_sha256)| AppliedRoutine {
                identity: identity.clone(),
                change: "already-applied".into(),
                new_sha256: new_sha256.clone(),
                previous_sha256: String::new(),
            })
            .collect();
        JobResult {
            applied,
            ..self.into_result()
        }
    }
}

/// The `idempotency` step: a redelivered job is reported from its ledger
/// rows, never re-applied.
pub async fn already_done(
    ctx: &JobContext,
    conn: &TargetConnection,
) -> Result<Option<Replayed>, JobFailure> {
    let rows = ctx
        .step(
            "idempotency",
            async {
                sql::find_job_in_ledger(&conn.client, &ctx.target.ledger_schema, &ctx.job.id)
                    .await
                    .map_err(|e| database("ledger lookup failed", e))
            },
            |rows| match rows.len() {
                0 => "job not yet applied".into(),
                n => format!("job already applied ({n} ledger rows): reporting, not re-applying"),
            },
        )
        .await?;
    Ok((!rows.is_empty()).then_some(Replayed { rows }))
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
