//! The deploy path of DESIGN §5, in order: connect, lock, idempotency check,
//! BEGIN, backup, apply, grants, ledger, smoke tests in rolled-back savepoints,
//! COMMIT — or ROLLBACK on any failure, leaving the database as it was — then
//! the post-commit smoke test on a fresh connection, with an automatic
//! restore of the backup if that fails.
//!
//! A batch is the same path over many routines in dependency order, all in
//! one transaction; `continue_on_error` batches go through `each.rs`.

pub mod after_deploy;
mod each;
mod escaped;
mod failed;
mod finish;
mod retire;

use std::time::Instant;

use pgrollout_shared::job::BatchOptions;
use pgrollout_shared::proto::{
    AppliedRoutine, JobResult, Outcome, RoutineOutcome, SmokeReport, StepStatus,
};
use pgrollout_shared::routine::Routine;

use crate::backup::WrittenBackup;
use crate::jobs::context::{failed_result, millis, txn_seal, Finished, JobContext};
use crate::jobs::steps::apply;
use crate::jobs::steps::preopen::PreOpened;
use crate::jobs::steps::{self, replace, smoke_step};
use crate::sql::TargetConnection;
use failed::{failed_smoke, outcomes_all, Failed};
use finish::{roll_back, verify_after_commit_on, AfterCommit};

pub async fn run(ctx: &JobContext, routines: &[Routine], batch: &BatchOptions) -> Finished {
    match deploy(ctx, routines, batch).await {
        Ok(finished) => finished,
        Err(failed) => {
            let mut finished = failed_result(failed.failure, failed.smoke);
            finished.result.routines = failed.outcomes;
            finished
        }
    }
}

async fn deploy(
    ctx: &JobContext,
    routines: &[Routine],
    batch: &BatchOptions,
) -> Result<Finished, Failed> {
    let mut conn = steps::connect(ctx).await?;
    steps::lock(ctx, &conn).await?;
    if let Some(replayed) = steps::already_done(ctx, &conn).await? {
        return Ok(replayed.into_deploy_result().into());
    }
    if batch.refuse_drift {
        steps::drift::refuse_drift(ctx, &conn, routines).await?;
    }
    if pgrollout_shared::retire::plan_retires(routines) {
        return retire::run(ctx, &mut conn, routines)
            .await
            .map(Finished::from);
    }
    if batch.continue_on_error {
        return each::run(ctx, &mut conn, routines, batch).await;
    }

    // The post-commit smoke test's own connections, opened while the
    // transaction runs rather than after COMMIT (as the CREATEs go out).
    let mut post_commit = PreOpened::planned(ctx, routines);
    txn_seal::begin(&conn).await?;
    let InTransaction {
        applied,
        written,
        ledger_ids,
        smoke,
        oids,
    } = match apply_in_transaction(ctx, &mut conn, routines, &mut post_commit).await {
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
        return Ok(Finished::from(JobResult {
            outcome: Outcome::Succeeded as i32,
            message: "every routine unchanged; nothing was re-created".into(),
            ledger_ids,
            applied,
            routines: deployed,
            ..Default::default()
        }));
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
    post_commit: &mut PreOpened,
) -> Result<InTransaction, Failed> {
    // The backup file is written and verified (two fsyncs, a read back)
    // while the CREATEs run, not before them: the disk and the database work
    // at the same time. "No change without a verified backup" still holds:
    // until COMMIT nothing the CREATEs did is visible to another session, a
    // failed backup rolls the whole transaction back like any failure, and
    // the ledger (which names the backup) and the COMMIT wait for the
    // verified file. Its step is reported when the file is verified, before
    // the apply's, as the order the guarantee rests on.
    ctx.event("backup", StepStatus::Started, "", 0, Vec::new());
    let backup_started = Instant::now();
    let (mut before, pending) = match apply::start_backup(ctx, conn, routines).await {
        Ok(started) => started,
        Err(failure) => {
            ctx.failed("backup", &failure, millis(backup_started.elapsed()));
            return Err(failure.into());
        }
    };
    let unchanged = before.untouched_count();
    let Some(pending) = pending else {
        // Every routine unchanged: no backup needed.
        ctx.event(
            "backup",
            StepStatus::Succeeded,
            before.describe(),
            millis(backup_started.elapsed()),
            Vec::new(),
        );
        return record_unchanged(ctx, conn, routines, before).await;
    };
    // Only what changed is created; the unchanged routines are not touched.
    let changed = before.changed(routines);
    let positions: Vec<usize> = (0..routines.len())
        .filter(|&index| !before.untouched[index])
        .collect();

    ctx.event("apply", StepStatus::Started, "", 0, Vec::new());
    let started = Instant::now();
    let previous: Vec<&crate::sql::RoutineSnapshot> =
        positions.iter().map(|&i| &before.previous[i]).collect();
    // The post-commit smoke test's connections open as the CREATEs go out:
    // from here on the database works on one core for a while.
    post_commit.begin(ctx);
    let (created, (written, backup_done)) = futures_util::future::join(
        replace::create_changed(ctx, conn, &changed, &previous),
        pending.finish_timed(),
    )
    .await;
    // The backup's own time: from its start to its file verified.
    let backup_ms = millis(backup_done.saturating_duration_since(backup_started));
    // The backup first: without it, nothing of this transaction may stay.
    match written {
        Ok(written) => {
            before.written = Some(written);
            ctx.event(
                "backup",
                StepStatus::Succeeded,
                before.describe(),
                backup_ms,
                Vec::new(),
            );
        }
        Err(failure) => {
            ctx.failed("backup", &failure, backup_ms);
            // The apply step started alongside: it ends here, undone with
            // the transaction the caller rolls back.
            ctx.event(
                "apply",
                StepStatus::Failed,
                "not kept: the backup could not be written, so the transaction is rolled back",
                millis(started.elapsed()),
                Vec::new(),
            );
            return Err(Failed {
                failure,
                smoke: Vec::new(),
                outcomes: outcomes_all(routines, "rolled-back"),
            });
        }
    }
    let recreated = match created {
        Ok(recreated) => recreated,
        Err((index, failure)) => {
            ctx.failed("apply", &failure, millis(started.elapsed()));
            let index = positions[index];
            let mut outcomes = outcomes_all(routines, "rolled-back");
            outcomes[index].status = "failed".into();
            outcomes[index].error = failure.message();
            outcomes[index + 1..]
                .iter_mut()
                .for_each(|o| o.status = "not-run".into());
            return Err(Failed {
                failure: failure.followed_by(&format!(
                    " (routine {} of {}); nothing was committed",
                    index + 1,
                    routines.len()
                )),
                smoke: Vec::new(),
                outcomes,
            });
        }
    };
    for &index in &recreated {
        before.recreated[positions[index]] = true;
    }
    let created = match apply::verify_created(conn, routines).await {
        Ok(created) => created,
        Err(failure) => {
            ctx.failed("apply", &failure, millis(started.elapsed()));
            return Err(failure.into());
        }
    };
    ctx.event(
        "apply",
        StepStatus::Succeeded,
        apply_line(&changed, &recreated, unchanged),
        millis(started.elapsed()),
        Vec::new(),
    );

    let changed_created: Vec<apply::Created> =
        positions.iter().map(|&i| created[i].clone()).collect();
    let oids = apply::oids(&created);
    // The agent makes the ledger's rows while the server applies the
    // grants (the grants' request goes out first), not after their answer.
    let (granted, rows) = futures_util::future::join(
        ctx.step(
            "grants",
            apply::grant(conn, &changed, &changed_created),
            |granted| granted.to_string(),
        ),
        async { apply::ledger_rows(conn, routines, &oids, &before) },
    )
    .await;
    granted?;
    let (applied, ledger_ids) = ctx
        .step(
            "ledger",
            async {
                apply::ensure_ledger(ctx, conn).await?;
                apply::insert_ledger_rows(ctx, conn, routines, rows?, &before).await
            },
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
