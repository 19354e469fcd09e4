//! The deploy path of DESIGN §5, in order: connect, lock, idempotency check,
//! BEGIN, backup, apply, grants, ledger, smoke tests in rolled-back savepoints,
//! COMMIT — or ROLLBACK on any failure, leaving the database as it was — then
//! the post-commit smoke test on a fresh connection, with an automatic
//! restore of the backup if that fails.
//!
//! A batch is the same path over many routines in dependency order, all in
//! one transaction; `continue_on_error` batches go through `deploy_each`.

use std::time::Instant;

use pgrollout_shared::job::BatchOptions;
use pgrollout_shared::proto::{
    AppliedRoutine, JobResult, Outcome, RoutineOutcome, SmokeReport, StepStatus,
};
use pgrollout_shared::routine::Routine;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use super::apply::{self, smoke_summary};
use super::preopen::PreOpened;
use super::replace;
use super::{
    deploy_each, failed_result, restore, smoke_runner::run_smoke_tests_at, txn_seal, JobContext,
    JobFailure,
};
use crate::backup::WrittenBackup;
use crate::sql::{self, describe_error, TargetConnection};
pub(super) use pgrollout_shared::errors::error_chain;

/// Advisory-lock key every pgrollout deploy takes on its target ("pgrollou"
/// in ASCII). Advisory locks are per database, so this serialises rollouts
/// per target (`max_concurrent = 1`).
pub const DEPLOY_LOCK_KEY: i64 = 0x7067_726f_6c6c_6f75;

pub async fn run(ctx: &JobContext, routines: &[Routine], batch: &BatchOptions) -> JobResult {
    match deploy(ctx, routines, batch).await {
        Ok(result) => result,
        Err(failed) => {
            let mut result = failed_result(failed.failure, failed.smoke);
            result.routines = failed.outcomes;
            result
        }
    }
}

/// A deploy that stopped: why, the smoke reports so far, and what happened
/// to each routine.
pub(super) struct Failed {
    pub failure: JobFailure,
    pub smoke: Vec<SmokeReport>,
    pub outcomes: Vec<RoutineOutcome>,
}

impl From<JobFailure> for Failed {
    fn from(failure: JobFailure) -> Self {
        Failed {
            failure,
            smoke: Vec::new(),
            outcomes: Vec::new(),
        }
    }
}

/// The same status for every routine (e.g. all rolled back).
pub(super) fn outcomes_all(routines: &[Routine], status: &str) -> Vec<RoutineOutcome> {
    routines
        .iter()
        .map(|r| RoutineOutcome {
            identity: r.identity.to_string(),
            status: status.into(),
            ..Default::default()
        })
        .collect()
}

async fn deploy(
    ctx: &JobContext,
    routines: &[Routine],
    batch: &BatchOptions,
) -> Result<JobResult, Failed> {
    let mut conn = ctx
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
    ctx.step("lock", take_deploy_lock(ctx, &conn), |_| {
        "deploy lock held".into()
    })
    .await?;
    if let Some(replayed) = already_applied(ctx, &conn).await? {
        return Ok(replayed);
    }
    if pgrollout_shared::retire::plan_retires(routines) {
        return super::retire::run(ctx, &mut conn, routines).await;
    }
    if batch.continue_on_error {
        return deploy_each::run(ctx, &mut conn, routines, batch).await;
    }

    // The post-commit smoke test's own connection, opened while the
    // transaction runs rather than after COMMIT.
    let post_commit = PreOpened::start(ctx);
    txn_seal::begin(&conn).await?;
    let InTransaction {
        applied,
        written,
        ledger_ids,
        smoke,
        oids,
    } = match apply_in_transaction(ctx, &mut conn, routines).await {
        Ok(done) => done,
        Err(failed) => return Err(roll_back(ctx, &mut conn, failed).await),
    };
    ctx.step("commit", ctx.commit(&conn, true), |_| "committed".into())
        .await
        .map_err(|failure| Failed {
            failure,
            smoke: smoke.clone(),
            outcomes: outcomes_all(routines, "not-run"),
        })?;
    let deployed = applied
        .iter()
        .map(|a| RoutineOutcome {
            identity: a.identity.clone(),
            status: if a.change == "unchanged" {
                "unchanged"
            } else {
                "deployed"
            }
            .into(),
            ..Default::default()
        })
        .collect();
    let Some(written) = written else {
        // Nothing changed, so there is nothing to verify after COMMIT.
        return Ok(JobResult {
            outcome: Outcome::Succeeded as i32,
            message: "every routine unchanged; nothing was re-created".into(),
            ledger_ids,
            applied,
            routines: deployed,
            ..Default::default()
        });
    };
    let result = JobResult {
        outcome: Outcome::Succeeded as i32,
        message: "deployed and verified".into(),
        backup_path: written.path.display().to_string(),
        backup_sha256: written.sha256.clone(),
        ledger_ids,
        applied,
        routines: deployed,
        smoke,
        ..Default::default()
    };
    let checked = AfterCommit {
        routines,
        oids: &oids,
        written: &written,
    };
    Ok(verify_after_commit_on(ctx, &mut conn, checked, result, post_commit).await)
}

/// Rolls back the deploy's transaction after `failed`, and says what became
/// of it.
pub(super) async fn roll_back(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    failed: Failed,
) -> Failed {
    // "As it was" only while the transaction is known to be the sealed one
    // the agent opened; else find out what became of it.
    let escaped = conn.escaped();
    // On a broken connection the server rolls back by itself.
    let _ = conn.client.batch_execute("ROLLBACK").await;
    if let Some(why) = escaped {
        return super::escaped::after_deploy_escape(ctx, conn, failed, &why).await;
    }
    ctx.event(
        "rollback",
        StepStatus::Succeeded,
        "transaction rolled back; the database is as it was",
        0,
        Vec::new(),
    );
    failed
}

/// A redelivered job: the ledger already holds it, so report, never re-apply.
async fn already_applied(
    ctx: &JobContext,
    conn: &TargetConnection,
) -> Result<Option<JobResult>, Failed> {
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
        .await?;
    if recorded.is_empty() {
        return Ok(None);
    }
    Ok(Some(JobResult {
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
    }))
}

/// What the transaction did, once everything in it passed.
struct InTransaction {
    applied: Vec<AppliedRoutine>,
    /// `None`: every routine was unchanged, so nothing needed a backup.
    written: Option<WrittenBackup>,
    ledger_ids: Vec<i64>,
    smoke: Vec<SmokeReport>,
    /// The routines' oids, so the post-commit checks need not resolve their
    /// signatures again.
    oids: Vec<u32>,
}

/// Everything between BEGIN and COMMIT. Any `Err` means the caller rolls back.
async fn apply_in_transaction(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    routines: &[Routine],
) -> Result<InTransaction, Failed> {
    let mut before = ctx
        .step(
            "backup",
            apply::take_backup(ctx, conn, routines),
            |before| before.describe(),
        )
        .await?;
    let unchanged = before.untouched_count();
    if unchanged == routines.len() {
        return record_unchanged(ctx, conn, routines, before).await;
    }
    // Only what changed is created; the unchanged routines are not touched.
    let changed = before.changed(routines);
    let positions: Vec<usize> = (0..routines.len())
        .filter(|&index| !before.untouched[index])
        .collect();

    ctx.event("apply", StepStatus::Started, "", 0, Vec::new());
    let started = Instant::now();
    let previous: Vec<&crate::sql::RoutineSnapshot> =
        positions.iter().map(|&i| &before.previous[i]).collect();
    let recreated = match replace::create_changed(ctx, conn, &changed, &previous).await {
        Ok(recreated) => recreated,
        Err((index, failure)) => {
            ctx.event(
                "apply",
                StepStatus::Failed,
                &failure.message,
                super::millis(started.elapsed()),
                Vec::new(),
            );
            let index = positions[index];
            let mut outcomes = outcomes_all(routines, "rolled-back");
            outcomes[index].status = "failed".into();
            outcomes[index].error = failure.message.clone();
            outcomes[index + 1..]
                .iter_mut()
                .for_each(|o| o.status = "not-run".into());
            return Err(Failed {
                failure: JobFailure {
                    outcome: failure.outcome,
                    message: format!(
                        "{} (routine {} of {}); nothing was committed",
                        failure.message,
                        index + 1,
                        routines.len()
                    ),
                },
                smoke: Vec::new(),
                outcomes,
            });
        }
    };
    for &index in &recreated {
        before.recreated[positions[index]] = true;
    }
    let created = apply::verify_created(conn, routines).await?;
    ctx.event(
        "apply",
        StepStatus::Succeeded,
        apply_line(&changed, &recreated, unchanged),
        super::millis(started.elapsed()),
        Vec::new(),
    );

    let changed_created: Vec<apply::Created> =
        positions.iter().map(|&i| created[i].clone()).collect();
    ctx.step(
        "grants",
        apply::grant(conn, &changed, &changed_created),
        |count| format!("{count} grant(s) applied"),
    )
    .await?;
    let oids = apply::oids(&created);
    let (applied, ledger_ids) = ctx
        .step(
            "ledger",
            apply::record(ctx, conn, routines, &oids, &before),
            |(_, ids)| format!("{} ledger row(s) written", ids.len()),
        )
        .await?;

    // Every routine's smoke test, unchanged ones included: a changed routine
    // can break the ones that call it.
    let reports = smoke_step(ctx, conn, routines, &oids, "smoke", "in-transaction").await?;
    if let Some(failed) = failed_smoke(routines, &reports, "nothing was committed") {
        return Err(failed);
    }
    Ok(InTransaction {
        applied,
        written: before.written,
        ledger_ids,
        smoke: reports,
        oids,
    })
}

/// The apply step's line: what was created or replaced, and what was left
/// alone.
fn apply_line(changed: &[Routine], recreated: &[usize], unchanged: usize) -> String {
    let mut line = format!("{} routine(s) created or replaced", changed.len());
    if !recreated.is_empty() {
        let names: Vec<String> = recreated
            .iter()
            .map(|&i| changed[i].identity.to_string())
            .collect();
        line.push_str(&format!(
            " ({} by DROP + CREATE, owner, ACL and comment carried over: {})",
            names.len(),
            names.join(", ")
        ));
    }
    if unchanged > 0 {
        line.push_str(&format!("; {unchanged} unchanged, left untouched"));
    }
    line
}

/// A deploy in which every routine is unchanged: nothing is created, granted
/// or smoke-tested; only the job's `unchanged` ledger rows are written.
async fn record_unchanged(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    routines: &[Routine],
    before: apply::Before,
) -> Result<InTransaction, Failed> {
    ctx.event(
        "apply",
        StepStatus::Skipped,
        format!(
            "all {} routine(s) unchanged: nothing created or replaced",
            routines.len()
        ),
        0,
        Vec::new(),
    );
    let (applied, ledger_ids) = ctx
        .step(
            "ledger",
            apply::record(ctx, conn, routines, &[], &before),
            |(_, ids)| format!("{} ledger row(s) written, all unchanged", ids.len()),
        )
        .await?;
    Ok(InTransaction {
        applied,
        written: None,
        ledger_ids,
        smoke: Vec::new(),
        oids: Vec::new(),
    })
}

/// Runs the smoke tests of `routines` as one step and reports them. `oids`
/// holds the routines' oids when they are known (or is empty).
pub(super) async fn smoke_step(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    routines: &[Routine],
    oids: &[u32],
    step: &str,
    phase: &str,
) -> Result<Vec<SmokeReport>, JobFailure> {
    ctx.event(step, StepStatus::Started, "", 0, Vec::new());
    let started = Instant::now();
    // Every caller runs this inside a transaction: the deploy's own calls are
    // kept out of the statistics a post-deploy watch compares (issue 23).
    let counted = crate::sql::watch_stats::stop_counting_calls(&conn.client).await;
    let ran = match counted {
        // A bar on the operator's terminal for the calls too: on a large
        // batch they take seconds (issue 16).
        Ok(_) => {
            run_smoke_tests_at(conn, routines, oids, phase, |done, total| {
                ctx.progress(step, done, total)
            })
            .await
        }
        Err(error) => Err(error),
    };
    // The calls are the project's SQL: is the transaction still the agent's?
    if let Err(why) = txn_seal::confirm_after_calls(conn).await {
        let failure = JobFailure::deploy(txn_seal::escaped_message("a smoke test call", &why));
        ctx.event(
            step,
            StepStatus::Failed,
            &failure.message,
            super::millis(started.elapsed()),
            Vec::new(),
        );
        return Err(failure);
    }
    let reports = ran.map_err(|e| {
        JobFailure::deploy(format!(
            "smoke test could not run: {}",
            describe_error(&e, None)
        ))
    })?;
    ctx.add_smoke_times(&reports);
    let status = if reports.iter().all(|r| r.passed) {
        StepStatus::Succeeded
    } else {
        StepStatus::Failed
    };
    ctx.event(
        step,
        status,
        smoke_summary(&reports),
        super::millis(started.elapsed()),
        reports.clone(),
    );
    Ok(reports)
}

/// A smoke failure as a deploy failure: exit 3, the failed routines named.
fn failed_smoke(
    routines: &[Routine],
    reports: &[SmokeReport],
    consequence: &str,
) -> Option<Failed> {
    if reports.iter().all(|r| r.passed) {
        return None;
    }
    let mut outcomes = outcomes_all(routines, "rolled-back");
    for (outcome, routine) in outcomes.iter_mut().zip(routines) {
        let name = routine.identity.to_string();
        if let Some(report) = reports.iter().find(|r| r.routine == name && !r.passed) {
            outcome.status = "failed".into();
            outcome.error = format!("smoke test {:?} failed", report.test);
        }
    }
    Some(Failed {
        failure: JobFailure {
            outcome: Outcome::SmokeFailed,
            message: format!(
                "smoke test failed ({}); {consequence}",
                smoke_summary(reports)
            ),
        },
        smoke: reports.to_vec(),
        outcomes,
    })
}

/// The post-commit smoke test on a connection opened now, and the automatic
/// restore if it fails.
pub(super) async fn verify_after_commit(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    routines: &[Routine],
    written: &WrittenBackup,
    result: JobResult,
) -> JobResult {
    let checked = AfterCommit {
        routines,
        oids: &[],
        written,
    };
    verify_after_commit_on(ctx, conn, checked, result, PreOpened::later()).await
}

/// What a committed deploy is checked against: its routines (with their
/// oids when known) and the backup an automatic rollback restores.
struct AfterCommit<'a> {
    routines: &'a [Routine],
    oids: &'a [u32],
    written: &'a WrittenBackup,
}

/// The post-commit smoke test on `post_commit`, and the automatic restore if
/// it fails.
async fn verify_after_commit_on(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    checked: AfterCommit<'_>,
    mut result: JobResult,
    post_commit: PreOpened,
) -> JobResult {
    let AfterCommit {
        routines,
        oids,
        written,
    } = checked;
    if routines.is_empty() {
        return result;
    }
    let post = post_commit_smoke(ctx, routines, oids, post_commit).await;
    let why = match post {
        Ok(reports) if reports.iter().all(|r| r.passed) => {
            result.smoke.extend(reports);
            return result;
        }
        Ok(reports) => {
            result.smoke.extend(reports);
            "the post-commit smoke test failed".to_owned()
        }
        Err(failure) => format!(
            "the post-commit smoke test could not run: {}",
            failure.message
        ),
    };
    let restored = restore::restore_backup(ctx, conn, written).await;
    result.outcome = Outcome::SmokeFailed as i32;
    result.message = match restored {
        Ok(()) => {
            result.routines.iter_mut().for_each(|o| o.status = "rolled-back".into());
            format!("{why}; automatic rollback restored the backup {}", written.path.display())
        }
        Err(failure) => format!(
            "{why}; AUTOMATIC ROLLBACK FAILED: {} — the new version is live; restore from {} by hand",
            failure.message,
            written.path.display()
        ),
    };
    result
}

pub(super) async fn take_deploy_lock(
    ctx: &JobContext,
    conn: &TargetConnection,
) -> Result<(), JobFailure> {
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

/// After COMMIT, on another connection than the deploy's (opened while the
/// transaction ran): the live definitions as any caller will see them, still
/// inside a transaction that is rolled back.
async fn post_commit_smoke(
    ctx: &JobContext,
    routines: &[Routine],
    oids: &[u32],
    post_commit: PreOpened,
) -> Result<Vec<SmokeReport>, JobFailure> {
    let mut fresh = match post_commit.take(ctx).await {
        Ok(fresh) => fresh,
        Err(error) => {
            let failure = JobFailure::deploy(error_chain(&error));
            ctx.event(
                "post-commit-smoke",
                StepStatus::Failed,
                &failure.message,
                0,
                Vec::new(),
            );
            return Err(failure);
        }
    };
    txn_seal::begin(&fresh).await?;
    let reports = smoke_step(
        ctx,
        &mut fresh,
        routines,
        oids,
        "post-commit-smoke",
        "post-commit",
    )
    .await;
    let _ = fresh.client.batch_execute("ROLLBACK").await;
    reports
}

pub(super) async fn simple(conn: &TargetConnection, statement: &str) -> Result<(), JobFailure> {
    conn.client.batch_execute(statement).await.map_err(|e| {
        JobFailure::deploy(format!("{statement} failed: {}", describe_error(&e, None)))
    })
}
