//! `pgrollout rollback`: restores earlier versions exactly, in one
//! transaction — connect, lock, idempotency, resolve (from the ledger),
//! sources (backup → controller plan → ledger), BEGIN, backup of the current
//! state, restore (definition, owner, ACL, comment), ledger, smoke test in
//! rolled-back savepoints, COMMIT, then the post-restore check and smoke test
//! on a fresh connection. `--emergency` skips both smoke phases.
//!
//! The whole job is bounded by its deadline (`rollback_timeout`). It stops on
//! its own a little before it, so that it can say which side of COMMIT it
//! stopped on: before, the transaction is rolled back and nothing changed;
//! after, the restore stands and only its verification is missing.

use pgrollout_shared::operations::{RollbackScope, RollbackSpec, RollbackTarget};
use pgrollout_shared::proto::{JobResult, Outcome, RestoredRoutine, StepStatus};

use super::reversal::apply::{prepare_and_apply, Applied, Reversal};
use super::reversal::plan::{plan, Planned};
use super::reversal::progress::Progress;
use super::reversal::verify::smoke_on_fresh_connection;
use super::steps::{self, database, Stopped};
use crate::jobs::context::{Finished, JobContext, JobFailure};
use crate::sql::{
    rows_for_rollout, rows_for_routine_of, rows_for_selector, LedgerRecord, TargetConnection,
};

pub async fn run(ctx: &JobContext, spec: &RollbackSpec) -> Finished {
    let progress = Progress::default();
    rollback(ctx, spec, &progress)
        .await
        .unwrap_or_else(Stopped::into_result)
}

/// Everything that must happen before the job's own deadline, or not at all.
/// A timeout drops the future and with it the connection: the transaction,
/// never committed, is rolled back by the server.
async fn bounded<T>(
    deadline: tokio::time::Instant,
    progress: &Progress,
    work: impl std::future::Future<Output = Result<T, Stopped>>,
) -> Result<T, Stopped> {
    match tokio::time::timeout_at(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(Stopped {
            failure: failure_of(progress.timed_out()),
            smoke: Vec::new(),
            warnings: Vec::new(),
        }),
    }
}

fn failure_of(result: JobResult) -> JobFailure {
    JobFailure::new(result.outcome(), result.message)
}

async fn rollback(
    ctx: &JobContext,
    spec: &RollbackSpec,
    progress: &Progress,
) -> Result<Finished, Stopped> {
    let deadline = steps::own_deadline(ctx);
    let opened = bounded(deadline, progress, async {
        progress.at("connect");
        let conn = steps::connect(ctx).await?;
        progress.at("lock");
        steps::lock(ctx, &conn).await?;
        progress.at("idempotency");
        if let Some(replayed) = steps::already_done(ctx, &conn).await? {
            return Ok(Err(replayed.into_result()));
        }
        progress.at("resolve");
        let rows = load_rows(ctx, &conn, spec).await?;
        Ok(Ok((conn, rows)))
    })
    .await?;
    let (mut conn, rows) = match opened {
        Ok(opened) => opened,
        Err(replayed) => return Ok(Finished::from(replayed)),
    };
    let (planned, notes) = ctx
        .step(
            "resolve",
            async { plan(&rows, spec, &ctx.job.label, &ctx.target.name) },
            |(planned, notes)| describe_plan(planned, notes),
        )
        .await?;
    let mut warnings = notes;
    let reversal = Reversal {
        action: "rollback",
        job_id: ctx.job.id.clone(),
        strict: spec.emergency.is_none(),
        smoke: spec.emergency.is_none(),
    };
    let prepared = bounded(
        deadline,
        progress,
        prepare_and_apply(
            ctx,
            &mut conn,
            spec,
            &planned,
            &reversal,
            progress,
            &mut warnings,
        ),
    )
    .await;
    let Applied {
        chosen,
        outcomes,
        restored,
        ledger_ids,
        smoke,
        written,
    } = match prepared {
        Ok(applied) => applied,
        Err(mut stopped) => {
            // A timeout dropped the work mid-statement: close the connection
            // rather than queue a ROLLBACK behind it. Either way the server
            // rolls the transaction back; it was never committed.
            drop(conn);
            ctx.event(
                "rollback",
                StepStatus::Succeeded,
                "transaction rolled back; the database is as it was before the rollback",
                0,
                Vec::new(),
            );
            stopped.warnings.extend(warnings);
            return Err(stopped);
        }
    };
    // COMMIT is not cut off by the job's own deadline, so that a timeout can
    // never leave its outcome in doubt; the controller's deadline (a little
    // later) still bounds it.
    progress.at("commit");
    ctx.step("commit", ctx.commit(&conn, true), |_| "committed".into())
        .await
        .map_err(|failure| Stopped {
            failure,
            smoke: smoke.clone(),
            warnings: warnings.clone(),
        })?;
    progress.committed(summary(&restored));

    let mut result = JobResult {
        outcome: Outcome::Succeeded as i32,
        backup_path: written.path.display().to_string(),
        backup_sha256: written.sha256.clone(),
        ledger_ids,
        restored,
        smoke,
        ..Default::default()
    };
    progress.at("post-restore-smoke");
    // The SQLSTATE of a post-restore smoke test that could not run, for the
    // job's span (the report says it in words).
    let mut sqlstate = None;
    if spec.emergency.is_some() {
        ctx.event(
            "post-restore-smoke",
            StepStatus::Skipped,
            "emergency: post-restore smoke test skipped",
            0,
            Vec::new(),
        );
        result.message = format!(
            "emergency rollback committed: {}",
            summary(&result.restored)
        );
    } else {
        let post = tokio::time::timeout_at(
            deadline,
            smoke_on_fresh_connection(ctx, &planned, &chosen, &outcomes),
        )
        .await;
        match post {
            Ok(Ok(reports)) if reports.iter().all(|r| r.passed) => {
                result.smoke.extend(reports);
                result.message = format!("rolled back and verified: {}", summary(&result.restored));
            }
            Err(_) => {
                let timed_out = progress.timed_out();
                result.outcome = timed_out.outcome;
                result.message = timed_out.message;
            }
            Ok(post) => {
                let why = match post {
                    Ok(reports) => {
                        result.smoke.extend(reports);
                        "the post-restore smoke test failed".to_owned()
                    }
                    Err(failure) => {
                        sqlstate = failure.sql_state().cloned();
                        format!(
                            "the post-restore smoke test could not run: {}",
                            failure.message()
                        )
                    }
                };
                result.outcome = Outcome::SmokeFailed as i32;
                result.message = format!(
                    "the restore was committed ({}), but {why}: the restored version is live; check it, then roll \
                     forward with `pgrollout deploy` or back further with `pgrollout rollback`",
                    summary(&result.restored)
                );
            }
        }
    }
    result.warnings = warnings;
    Ok(Finished { result, sqlstate })
}

async fn load_rows(
    ctx: &JobContext,
    conn: &TargetConnection,
    spec: &RollbackSpec,
) -> Result<Vec<LedgerRecord>, JobFailure> {
    let schema = &ctx.target.ledger_schema;
    let rows = match (&spec.scope, &spec.target) {
        (RollbackScope::Rollout(id), _) => rows_for_rollout(&conn.client, schema, id).await,
        (RollbackScope::Routines(selector), RollbackTarget::LedgerId(id)) => {
            let rows = rows_for_routine_of(&conn.client, schema, *id).await;
            // A ledger id about another procedure is refused by `plan`.
            let matching = rows_for_selector(&conn.client, schema, selector).await;
            match (rows, matching) {
                (Ok(rows), Ok(matching)) if matching.iter().any(|r| r.id == *id) => Ok(rows),
                (Ok(_), Ok(matching)) => Ok(matching),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        (RollbackScope::Routines(selector), _) => {
            rows_for_selector(&conn.client, schema, selector).await
        }
    };
    rows.map_err(|e| database("cannot read the ledger", e))
}

fn summary(restored: &[RestoredRoutine]) -> String {
    let count = |change: &str| restored.iter().filter(|r| r.change == change).count();
    format!(
        "{} restored, {} dropped, {} unchanged",
        count("restored"),
        count("dropped"),
        count("unchanged")
    )
}

fn describe_plan(planned: &[Planned<'_>], notes: &[String]) -> String {
    let parts: Vec<String> = planned
        .iter()
        .map(|p| match p.undoes() {
            Some(row) => format!(
                "{} undoes ledger #{} (rollout {})",
                p.identity, row.id, row.rollout_id
            ),
            None => format!(
                "{} to the version of ledger #{}",
                p.identity,
                p.ledger_row().id
            ),
        })
        .collect();
    // A thousand routines would make a line of hundreds of KB: the first
    // few, counted after; the ledger and the result list them all.
    let mut text = pgrollout_shared::text::abridged(&parts, 3, "; ");
    for note in notes {
        text.push_str("; ");
        text.push_str(note);
    }
    text
}
