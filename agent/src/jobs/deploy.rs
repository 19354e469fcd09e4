//! The deploy path of DESIGN §5, in order: connect, lock, idempotency check,
//! BEGIN, backup, apply, grants, ledger, smoke tests in rolled-back savepoints,
//! COMMIT — or ROLLBACK on any failure, leaving the database as it was — then
//! the post-commit smoke test on a fresh connection, with an automatic
//! restore of the backup if that fails.

use pgrollout_shared::proto::{AppliedRoutine, JobResult, Outcome, SmokeReport, StepStatus};
use pgrollout_shared::routine::Routine;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use super::{failed_result, restore, smoke_runner::run_smoke_tests, JobContext, JobFailure};
use crate::backup::{self, BackupHeader, WrittenBackup};
use crate::sql::{self, describe_error, LedgerJob, LedgerRow, RoutineSnapshot, TargetConnection};

/// Advisory-lock key every pgrollout deploy takes on its target ("pgrollou"
/// in ASCII). Advisory locks are per database, so this serialises rollouts
/// per target (`max_concurrent = 1`).
pub const DEPLOY_LOCK_KEY: i64 = 0x7067_726f_6c6c_6f75;

pub async fn run(ctx: &JobContext, routines: &[Routine]) -> JobResult {
    match deploy(ctx, routines).await {
        Ok(result) => result,
        Err((failure, smoke)) => failed_result(failure, smoke),
    }
}

type Failed = (JobFailure, Vec<SmokeReport>);

fn no_smoke(failure: JobFailure) -> Failed {
    (failure, Vec::new())
}

async fn deploy(ctx: &JobContext, routines: &[Routine]) -> Result<JobResult, Failed> {
    let mut conn = ctx
        .step(
            "connect",
            async {
                sql::connect(&ctx.target, &ctx.config.timeouts)
                    .await
                    .map_err(|e| JobFailure::deploy(error_chain(&e)))
            },
            |_| format!("connected to target {}", ctx.target.name),
        )
        .await
        .map_err(no_smoke)?;

    ctx.step("lock", take_deploy_lock(ctx, &conn), |_| {
        "deploy lock held".into()
    })
    .await
    .map_err(no_smoke)?;

    let recorded = ctx
        .step(
            "idempotency",
            async {
                sql::find_job_in_ledger(&conn.client, &ctx.target.ledger_schema, &ctx.job.id)
                    .await
                    .map_err(|e| {
                        JobFailure::deploy(format!(
                            "ledger lookup failed: {}",
                            describe_error(&e, None)
                        ))
                    })
            },
            |rows| match rows.len() {
                0 => "job not yet applied".into(),
                n => format!("job already applied ({n} ledger rows): reporting, not re-applying"),
            },
        )
        .await
        .map_err(no_smoke)?;
    if !recorded.is_empty() {
        return Ok(JobResult {
            outcome: Outcome::Succeeded as i32,
            message: "already applied by an earlier delivery of this job; nothing changed".into(),
            replayed_from_ledger: true,
            ledger_ids: recorded.iter().map(|(id, _, _)| *id).collect(),
            applied: recorded
                .into_iter()
                .map(|(_, identity, new_sha256)| AppliedRoutine {
                    identity,
                    change: "already-applied".into(),
                    new_sha256,
                    previous_sha256: String::new(),
                })
                .collect(),
            ..Default::default()
        });
    }

    simple(&conn, "BEGIN").await.map_err(no_smoke)?;
    let outcome = apply_in_transaction(ctx, &mut conn, routines).await;
    let (applied, written, ledger_ids, smoke) = match outcome {
        Ok(done) => done,
        Err(failed) => {
            // On a broken connection the server rolls back by itself.
            let _ = conn.client.batch_execute("ROLLBACK").await;
            ctx.event(
                "rollback",
                StepStatus::Succeeded,
                "transaction rolled back; the database is as it was",
                0,
                Vec::new(),
            );
            return Err(failed);
        }
    };
    ctx.step("commit", async { simple(&conn, "COMMIT").await }, |_| {
        "committed".into()
    })
    .await
    .map_err(|failure| (failure, smoke.clone()))?;

    let post = post_commit_smoke(ctx, routines).await;
    let mut all_smoke = smoke;
    let result = JobResult {
        outcome: Outcome::Succeeded as i32,
        backup_path: written.path.display().to_string(),
        backup_sha256: written.sha256.clone(),
        ledger_ids,
        applied,
        ..Default::default()
    };
    match post {
        Ok(reports) if reports.iter().all(|r| r.passed) => {
            all_smoke.extend(reports);
            Ok(JobResult {
                message: "deployed and verified".into(),
                smoke: all_smoke,
                ..result
            })
        }
        post => {
            let (reports, why) = match post {
                Ok(reports) => (reports, "the post-commit smoke test failed".to_owned()),
                Err(failure) => (
                    Vec::new(),
                    format!(
                        "the post-commit smoke test could not run: {}",
                        failure.message
                    ),
                ),
            };
            all_smoke.extend(reports);
            let restored = restore::restore_backup(ctx, &mut conn, &written).await;
            let message = match restored {
                Ok(()) => format!("{why}; automatic rollback restored the backup {}", written.path.display()),
                Err(failure) => format!(
                    "{why}; AUTOMATIC ROLLBACK FAILED: {} — the new version is live; restore from {} by hand",
                    failure.message,
                    written.path.display()
                ),
            };
            Ok(JobResult {
                outcome: Outcome::SmokeFailed as i32,
                message,
                smoke: all_smoke,
                ..result
            })
        }
    }
}

type Applied = (
    Vec<AppliedRoutine>,
    WrittenBackup,
    Vec<i64>,
    Vec<SmokeReport>,
);

/// Everything between BEGIN and COMMIT. Any `Err` means the caller rolls back.
async fn apply_in_transaction(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    routines: &[Routine],
) -> Result<Applied, Failed> {
    let signatures: Vec<String> = routines
        .iter()
        .map(|r| r.identity.regprocedure_input())
        .collect();
    let (previous, written) = ctx
        .step(
            "backup",
            take_backup(ctx, conn, &signatures),
            |(_, written)| {
                format!(
                    "{} (sha256 {}) verified",
                    written.path.display(),
                    written.sha256
                )
            },
        )
        .await
        .map_err(no_smoke)?;

    ctx.step("apply", apply_routines(conn, routines), |_| {
        format!("{} routine(s) created or replaced", routines.len())
    })
    .await
    .map_err(no_smoke)?;

    let grant_count: usize = routines.iter().map(|r| r.grants.len()).sum();
    ctx.step("grants", apply_grants(conn, routines), |_| {
        format!("{grant_count} grant(s) applied")
    })
    .await
    .map_err(no_smoke)?;

    let (applied, ledger_ids) = ctx
        .step(
            "ledger",
            record_in_ledger(ctx, conn, routines, &signatures, &previous, &written),
            |(_, ids)| format!("{} ledger row(s) written", ids.len()),
        )
        .await
        .map_err(no_smoke)?;

    ctx.event("smoke", StepStatus::Started, "", 0, Vec::new());
    let started = std::time::Instant::now();
    let reports = run_smoke_tests(conn, routines, "in-transaction")
        .await
        .map_err(|e| {
            no_smoke(JobFailure::deploy(format!(
                "smoke test could not run: {}",
                describe_error(&e, None)
            )))
        })?;
    let passed = reports.iter().all(|r| r.passed);
    let status = if passed {
        StepStatus::Succeeded
    } else {
        StepStatus::Failed
    };
    let summary = smoke_summary(&reports);
    ctx.event(
        "smoke",
        status,
        &summary,
        super::millis(started.elapsed()),
        reports.clone(),
    );
    if !passed {
        return Err((
            JobFailure {
                outcome: Outcome::SmokeFailed,
                message: format!("smoke test failed ({summary}); nothing was committed"),
            },
            reports,
        ));
    }
    Ok((applied, written, ledger_ids, reports))
}

async fn take_deploy_lock(ctx: &JobContext, conn: &TargetConnection) -> Result<(), JobFailure> {
    match conn
        .client
        .execute_typed("SELECT pg_advisory_lock($1)", &[(&DEPLOY_LOCK_KEY, Type::INT8)])
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => Err(JobFailure::deploy(format!(
            "another rollout holds the deploy lock on target {} (waited {}); try again when it finishes",
            ctx.target.name,
            humantime::format_duration(ctx.config.timeouts.lock)
        ))),
        Err(error) => Err(JobFailure::deploy(format!("cannot take the deploy lock: {}", describe_error(&error, None)))),
    }
}

async fn take_backup(
    ctx: &JobContext,
    conn: &TargetConnection,
    signatures: &[String],
) -> Result<(Vec<RoutineSnapshot>, WrittenBackup), JobFailure> {
    let snapshots = sql::snapshot_routines(&conn.client, signatures)
        .await
        .map_err(|e| {
            JobFailure::deploy(format!(
                "cannot read the current definitions: {}",
                describe_error(&e, None)
            ))
        })?;
    let header = BackupHeader {
        job_id: ctx.job.id.clone(),
        attempt: ctx.job.attempt,
        rollout_id: ctx.job.rollout_id.clone(),
        plan_id: ctx.job.plan_id.clone(),
        target: ctx.target.name.clone(),
        label: ctx.job.label.clone(),
        taken_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
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
}

async fn apply_routines(conn: &TargetConnection, routines: &[Routine]) -> Result<(), JobFailure> {
    for routine in routines {
        // The extended protocol accepts exactly one statement: a CREATE that
        // smuggles a second statement after a semicolon is refused here.
        if let Err(error) = conn.client.execute_typed(&routine.create_sql, &[]).await {
            let detail = describe_error(&error, Some(&routine.create_sql));
            let advice = match error.code() {
                Some(code) if *code == SqlState::INVALID_FUNCTION_DEFINITION => {
                    " — a changed return type, OUT parameters or argument names need DROP + CREATE, which pgrollout does not do implicitly; \
                     give the new version a new signature or drop the old one in a reviewed migration"
                }
                _ => "",
            };
            return Err(JobFailure::deploy(format!(
                "applying {} from {} failed: {detail}{advice}",
                routine.identity, routine.source_path
            )));
        }
    }
    Ok(())
}

async fn apply_grants(conn: &TargetConnection, routines: &[Routine]) -> Result<(), JobFailure> {
    for routine in routines {
        for grant in &routine.grants {
            // regprocedure text is quoted by PostgreSQL itself; the grantee by
            // our quoting helper. Nothing from the plan is pasted raw.
            let statement = format!(
                "GRANT {} ON ROUTINE {} TO {}",
                grant.privilege.keyword(),
                canonical_signature(conn, routine).await?,
                grant.grantee.to_sql()
            );
            conn.client.batch_execute(&statement).await.map_err(|e| {
                JobFailure::deploy(format!(
                    "granting on {} failed: {}",
                    routine.identity,
                    describe_error(&e, None)
                ))
            })?;
        }
    }
    Ok(())
}

async fn canonical_signature(
    conn: &TargetConnection,
    routine: &Routine,
) -> Result<String, JobFailure> {
    let signature = routine.identity.regprocedure_input();
    conn.client
        .query_typed_opt(
            "SELECT to_regprocedure($1)::text",
            &[(&signature, Type::TEXT)],
        )
        .await
        .map_err(|e| JobFailure::deploy(describe_error(&e, None)))?
        .and_then(|row| row.get::<_, Option<String>>(0))
        .ok_or_else(|| not_created(routine))
}

fn not_created(routine: &Routine) -> JobFailure {
    JobFailure::deploy(format!(
        "the statement in {} did not create {} (check its schema and argument types)",
        routine.source_path, routine.identity
    ))
}

async fn record_in_ledger(
    ctx: &JobContext,
    conn: &TargetConnection,
    routines: &[Routine],
    signatures: &[String],
    previous: &[RoutineSnapshot],
    written: &WrittenBackup,
) -> Result<(Vec<AppliedRoutine>, Vec<i64>), JobFailure> {
    let ledger_error = |e: tokio_postgres::Error| {
        JobFailure::deploy(format!("ledger write failed: {}", describe_error(&e, None)))
    };
    let new = sql::snapshot_routines(&conn.client, signatures)
        .await
        .map_err(ledger_error)?;
    let mut rows = Vec::with_capacity(routines.len());
    let mut applied = Vec::with_capacity(routines.len());
    for ((routine, before), after) in routines.iter().zip(previous).zip(&new) {
        let identity = after
            .identity
            .as_deref()
            .ok_or_else(|| not_created(routine))?;
        let change = match (&before.definition, &after.definition) {
            (None, _) => "created",
            (Some(old), Some(new)) if old == new => "unchanged",
            _ => "replaced",
        };
        applied.push(AppliedRoutine {
            identity: routine.identity.to_string(),
            change: change.into(),
            new_sha256: after.definition_sha256().unwrap_or_default(),
            previous_sha256: before.definition_sha256().unwrap_or_default(),
        });
        rows.push(LedgerRow {
            identity,
            change,
            previous: before,
            new: after,
        });
    }
    sql::ensure_ledger(&conn.client, &ctx.target.ledger_schema)
        .await
        .map_err(ledger_error)?;
    let backup_path = written.path.display().to_string();
    let attempt = i32::try_from(ctx.job.attempt).unwrap_or(i32::MAX);
    let job = LedgerJob {
        job_id: &ctx.job.id,
        attempt,
        rollout_id: &ctx.job.rollout_id,
        plan_id: &ctx.job.plan_id,
        action: "deploy",
        actor: &ctx.job.actor,
        trace_id: &ctx.job.trace.trace_id,
        commit_sha: &ctx.job.commit_sha,
        backup_path: &backup_path,
        backup_sha256: &written.sha256,
    };
    let ids = sql::insert_ledger_rows(&conn.client, &ctx.target.ledger_schema, &job, &rows)
        .await
        .map_err(ledger_error)?;
    Ok((applied, ids))
}

/// After COMMIT, on a fresh connection: the live definitions as any caller
/// will see them, still inside a transaction that is rolled back.
async fn post_commit_smoke(
    ctx: &JobContext,
    routines: &[Routine],
) -> Result<Vec<SmokeReport>, JobFailure> {
    ctx.event("post-commit-smoke", StepStatus::Started, "", 0, Vec::new());
    let started = std::time::Instant::now();
    let result = async {
        let mut fresh = sql::connect(&ctx.target, &ctx.config.timeouts)
            .await
            .map_err(|e| JobFailure::deploy(error_chain(&e)))?;
        simple(&fresh, "BEGIN").await?;
        let reports = run_smoke_tests(&mut fresh, routines, "post-commit")
            .await
            .map_err(|e| JobFailure::deploy(describe_error(&e, None)))?;
        let _ = fresh.client.batch_execute("ROLLBACK").await;
        Ok::<_, JobFailure>(reports)
    }
    .await;
    let elapsed = super::millis(started.elapsed());
    match &result {
        Ok(reports) => {
            let passed = reports.iter().all(|r| r.passed);
            let status = if passed {
                StepStatus::Succeeded
            } else {
                StepStatus::Failed
            };
            ctx.event(
                "post-commit-smoke",
                status,
                smoke_summary(reports),
                elapsed,
                reports.clone(),
            );
        }
        Err(failure) => ctx.event(
            "post-commit-smoke",
            StepStatus::Failed,
            &failure.message,
            elapsed,
            Vec::new(),
        ),
    }
    result
}

fn smoke_summary(reports: &[SmokeReport]) -> String {
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed)
        .map(|r| {
            let why: Vec<&str> = r
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.detail.as_str())
                .collect();
            format!("{} / {}: {}", r.routine, r.test, why.join("; "))
        })
        .collect();
    if failed.is_empty() {
        format!("{} smoke test(s) passed", reports.len())
    } else {
        format!(
            "{} of {} smoke test(s) failed: {}",
            failed.len(),
            reports.len(),
            failed.join(" | ")
        )
    }
}

pub(super) async fn simple(conn: &TargetConnection, statement: &str) -> Result<(), JobFailure> {
    conn.client.batch_execute(statement).await.map_err(|e| {
        JobFailure::deploy(format!("{statement} failed: {}", describe_error(&e, None)))
    })
}

/// An error and its causes on one line, for operator messages.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
