//! `--continue-on-error` batches: every routine in its own transaction, in
//! dependency order. A routine that fails is rolled back alone and reported;
//! the routines that depend on it are skipped with the reason; the rest are
//! deployed. One backup file covers the whole batch, written before anything
//! changes.

use std::time::Instant;

use pgrollout_shared::job::BatchOptions;
use pgrollout_shared::proto::{
    AppliedRoutine, JobResult, Outcome, RoutineOutcome, SmokeReport, StepStatus,
};
use pgrollout_shared::routine::Routine;

use super::failed::Failed;
use super::finish::verify_after_commit;
use crate::jobs::context::{Finished, JobContext, JobFailure};
use crate::jobs::steps::{apply, replace, smoke_step};
use crate::sql::{self, TargetConnection};

pub async fn run(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    routines: &[Routine],
    batch: &BatchOptions,
) -> Result<Finished, Failed> {
    let before = ctx
        .step(
            "backup",
            apply::take_backup(ctx, conn, routines),
            |before| before.describe(),
        )
        .await?;
    // Created once up front, so each routine's transaction only inserts.
    sql::ensure_ledger(&conn.client, &ctx.target.ledger_schema)
        .await
        .map_err(|e| JobFailure::database("cannot create the ledger", e))?;

    let total = routines.len();
    let mut outcomes: Vec<RoutineOutcome> = routines
        .iter()
        .map(|r| RoutineOutcome {
            identity: r.identity.to_string(),
            status: "not-run".into(),
            ..Default::default()
        })
        .collect();
    let mut blocked = vec![false; total];
    let mut worst = Outcome::Succeeded;
    let (mut applied, mut ledger_ids, mut smoke) = (Vec::new(), Vec::new(), Vec::new());
    ctx.event("apply", StepStatus::Started, "", 0, Vec::new());
    let step_started = Instant::now();
    for index in 0..total {
        let started = Instant::now();
        let blockers: Vec<usize> = batch
            .dependencies
            .iter()
            .filter(|(dependent, dependency)| *dependent == index && blocked[*dependency])
            .map(|(_, dependency)| *dependency)
            .collect();
        if let Some(&first) = blockers.first() {
            blocked[index] = true;
            outcomes[index].status = "skipped".into();
            outcomes[index].error = format!(
                "depends on {}, which {}",
                routines[first].identity,
                if outcomes[first].status == "failed" {
                    "failed"
                } else {
                    "was skipped"
                }
            );
        } else {
            let one = std::slice::from_ref(&routines[index]);
            let before_one = apply::Before {
                previous: before.previous[index..=index].to_vec(),
                untouched: vec![before.untouched[index]],
                recreated: vec![false],
                written: before.written.clone(),
            };
            match deploy_one(ctx, conn, one, &before_one).await {
                Ok((mut done, ids, reports)) => {
                    outcomes[index].status =
                        if done.first().is_some_and(|a| a.change == "unchanged") {
                            "unchanged"
                        } else {
                            "deployed"
                        }
                        .into();
                    applied.append(&mut done);
                    ledger_ids.extend(ids);
                    smoke.extend(reports);
                }
                Err((mut failure, reports)) => {
                    // Never "rolled back" unless it is the sealed transaction.
                    if let Some(why) = conn.escaped() {
                        failure = failure.followed_by(&format!(
                            "; {}",
                            crate::jobs::context::txn_seal::escaped_message(
                                "a smoke test call",
                                &why
                            )
                        ));
                    }
                    let _ = conn.client.batch_execute("ROLLBACK").await;
                    blocked[index] = true;
                    outcomes[index].status = "failed".into();
                    outcomes[index].error = failure.message();
                    smoke.extend(reports);
                    worst = worse(worst, failure.outcome);
                }
            }
        }
        outcomes[index].duration_ms = apply::elapsed_ms(started);
        outcomes[index].duration_us =
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        ctx.progress("apply", index + 1, total);
    }
    let count = |status: &str| outcomes.iter().filter(|o| o.status == status).count();
    let summary = format!(
        "{} deployed, {} unchanged, {} failed, {} skipped of {total}",
        count("deployed"),
        count("unchanged"),
        count("failed"),
        count("skipped")
    );
    let status = if worst == Outcome::Succeeded {
        StepStatus::Succeeded
    } else {
        StepStatus::Failed
    };
    ctx.event(
        "apply",
        status,
        &summary,
        apply::elapsed_ms(step_started),
        Vec::new(),
    );

    let deployed: Vec<Routine> = routines
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| o.status == "deployed" || o.status == "unchanged")
        .map(|(r, _)| r.clone())
        .collect();
    let (backup_path, backup_sha256) = before.backup_fields();
    let result = JobResult {
        outcome: worst as i32,
        message: summary,
        backup_path,
        backup_sha256,
        ledger_ids,
        applied,
        routines: outcomes,
        smoke,
        ..Default::default()
    };
    // Every transaction is settled: what follows verifies and, if needed,
    // restores, and must not be cut off by the fence.
    ctx.fence_lifted();
    match &before.written {
        Some(written) => Ok(verify_after_commit(ctx, conn, &deployed, written, result).await),
        // Every routine unchanged: nothing to verify after COMMIT.
        None => Ok(result.into()),
    }
}

/// One routine in its own transaction. On `Err` the caller rolls back. An
/// unchanged routine only gets its ledger row (one statement, atomic alone).
async fn deploy_one(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    routine: &[Routine],
    before: &apply::Before,
) -> Result<(Vec<AppliedRoutine>, Vec<i64>, Vec<SmokeReport>), (JobFailure, Vec<SmokeReport>)> {
    let plain = |failure: JobFailure| (failure, Vec::new());
    if before.untouched.iter().all(|u| *u) {
        let (applied, ids) = apply::record(ctx, conn, routine, &[], before)
            .await
            .map_err(plain)?;
        return Ok((applied, ids, Vec::new()));
    }
    crate::jobs::context::txn_seal::begin(conn)
        .await
        .map_err(plain)?;
    let previous: Vec<&crate::sql::RoutineSnapshot> = before.previous.iter().collect();
    let recreated = replace::create_changed(ctx, conn, routine, &previous)
        .await
        .map_err(|(_, failure)| plain(failure))?;
    let mut before = before.clone();
    for index in recreated {
        before.recreated[index] = true;
    }
    let before = &before;
    let created = apply::verify_created(conn, routine).await.map_err(plain)?;
    apply::grant(conn, routine, &created).await.map_err(plain)?;
    let oids = apply::oids(&created);
    let (applied, ids) = apply::record(ctx, conn, routine, &oids, before)
        .await
        .map_err(plain)?;
    let reports = smoke_step(ctx, conn, routine, &oids, "smoke", "in-transaction")
        .await
        .map_err(plain)?;
    if !reports.iter().all(|r| r.passed) {
        let failure = JobFailure::new(
            Outcome::SmokeFailed,
            format!("smoke test failed: {}", apply::smoke_summary(&reports)),
        );
        return Err((failure, reports));
    }
    ctx.commit(conn, false)
        .await
        .map_err(|failure| (failure, reports.clone()))?;
    Ok((applied, ids, reports))
}

/// The worse of two outcomes: the one with the higher exit code.
fn worse(a: Outcome, b: Outcome) -> Outcome {
    let code = |o: Outcome| pgrollout_shared::exit_code::ExitCode::from_outcome(o).code();
    if code(b) > code(a) {
        b
    } else {
        a
    }
}
