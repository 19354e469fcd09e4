//! Verifying a restore: the smoke tests of the restored version when the
//! controller knows its plan (SEED.md "Runs smoke test on rolled-back
//! version"), and for every routine a check that it exists — or is gone —
//! with exactly the recorded definition, owner, ACL and comment. Inside the
//! transaction (each call in a rolled-back savepoint), then again after
//! COMMIT on a fresh connection, as any caller will see it.

use pgrollout_shared::proto::{SmokeCheck, SmokeReport, StepStatus};
use pgrollout_shared::routine::Routine;

use super::plan::Planned;
use super::sources::Candidate;
use crate::jobs::context::millis;
use crate::jobs::context::{JobContext, JobFailure};
use crate::jobs::smoke::run_smoke_tests;
use crate::jobs::steps::{database, Stopped};
use crate::sql::{self, exact_restore::ExactOutcome, RoutineSnapshot, TargetConnection};

/// Smoke-tests the restored versions inside the open transaction; a failure
/// stops the job, and the caller rolls back.
pub async fn smoke_in_transaction(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    planned: &[Planned<'_>],
    chosen: &[Candidate],
    outcomes: &[ExactOutcome],
) -> Result<Vec<SmokeReport>, Stopped> {
    ctx.event("smoke", StepStatus::Started, "", 0, Vec::new());
    let started = std::time::Instant::now();
    let afters: Vec<&RoutineSnapshot> = outcomes.iter().map(|o| &o.after).collect();
    let reports = smoke(conn, planned, chosen, outcomes, &afters, "in-transaction")
        .await
        .map_err(|e| database("smoke test could not run", e))?;
    let (status, summary) = verdict(&reports);
    ctx.smoke_event(
        "smoke",
        status,
        &summary,
        millis(started.elapsed()),
        &reports,
    );
    if status == StepStatus::Failed {
        return Err(Stopped {
            failure: JobFailure::new(pgrollout_shared::proto::Outcome::SmokeFailed, format!(
                    "the restored version failed its smoke test ({summary}); the rollback was rolled back, nothing \
                     changed"
                )),
            smoke: reports,
            warnings: Vec::new(),
        });
    }
    Ok(reports)
}

/// After COMMIT, on a fresh connection, in a transaction that is rolled back.
pub async fn smoke_on_fresh_connection(
    ctx: &JobContext,
    planned: &[Planned<'_>],
    chosen: &[Candidate],
    outcomes: &[ExactOutcome],
) -> Result<Vec<SmokeReport>, JobFailure> {
    ctx.event("post-restore-smoke", StepStatus::Started, "", 0, Vec::new());
    let started = std::time::Instant::now();
    let work = async {
        let mut fresh = sql::connect(&ctx.target, &ctx.config.timeouts)
            .await
            .map_err(|e| {
                // The connection error's chain as text, its SQLSTATE kept;
                // after COMMIT a failure is never a refusal.
                let mut failure = JobFailure::connect(e);
                failure.outcome = pgrollout_shared::proto::Outcome::DeployFailed;
                failure
            })?;
        crate::jobs::context::txn_seal::begin(&fresh).await?;
        let identities: Vec<String> = planned.iter().map(|p| p.identity.to_owned()).collect();
        let live = sql::snapshot_routines(&fresh.client, &identities)
            .await
            .map_err(|e| database("cannot read the restored definitions", e))?;
        let live_refs: Vec<&RoutineSnapshot> = live.iter().collect();
        // What must be live is what the transaction verified and committed.
        let committed: Vec<ExactOutcome> = outcomes
            .iter()
            .map(|o| ExactOutcome {
                after: o.after.clone(),
                notes: Vec::new(),
                differences: Vec::new(),
            })
            .collect();
        let reports = smoke(
            &mut fresh,
            planned,
            chosen,
            &committed,
            &live_refs,
            "post-restore",
        )
        .await
        .map_err(|e| database("post-restore smoke test could not run", e))?;
        let _ = fresh.client.batch_execute("ROLLBACK").await;
        Ok::<_, JobFailure>(reports)
    };
    let result = work.await;
    let elapsed = millis(started.elapsed());
    match &result {
        Ok(reports) => {
            let (status, summary) = verdict(reports);
            ctx.smoke_event("post-restore-smoke", status, summary, elapsed, reports);
        }
        Err(failure) => ctx.failed("post-restore-smoke", failure, elapsed),
    }
    result
}

/// The known smoke tests of each restored version, then one exact-state
/// check per routine that has none.
async fn smoke(
    conn: &mut TargetConnection,
    planned: &[Planned<'_>],
    chosen: &[Candidate],
    expected: &[ExactOutcome],
    live: &[&RoutineSnapshot],
    phase: &str,
) -> Result<Vec<SmokeReport>, tokio_postgres::Error> {
    let mut tested: Vec<Routine> = Vec::new();
    let mut reports = Vec::new();
    for (((routine, candidate), expected), live) in
        planned.iter().zip(chosen).zip(expected).zip(live)
    {
        let known_tests = candidate
            .known
            .as_ref()
            .filter(|k| !k.routine.smoke_tests.is_empty() && live.existed);
        match known_tests {
            Some(known) => tested.push(known.routine.clone()),
            None => reports.push(exact_state_report(
                routine.identity,
                &expected.after,
                live,
                phase,
            )),
        }
    }
    let mut tests = run_smoke_tests(conn, &tested, phase).await?;
    tests.extend(reports);
    Ok(tests)
}

fn exact_state_report(
    identity: &str,
    expected: &RoutineSnapshot,
    live: &RoutineSnapshot,
    phase: &str,
) -> SmokeReport {
    let same = expected.existed == live.existed
        && expected.definition == live.definition
        && expected.owner == live.owner
        && expected.acl == live.acl
        && expected.comment == live.comment;
    let detail = match (expected.existed, same) {
        (false, true) => format!("{identity} is gone, as before the change"),
        (true, true) => format!(
            "{identity} exists; definition, owner, ACL and comment as restored (sha256 {})",
            live.definition_sha256()
                .map(|s| s[..12].to_owned())
                .unwrap_or_default()
        ),
        (false, false) => format!("{identity} still exists"),
        (true, false) if !live.existed => format!("{identity} not found in the catalog"),
        (true, false) => format!("{identity} differs from the restored state"),
    };
    SmokeReport {
        routine: identity.to_owned(),
        test: "(no smoke test known for this version: exact state only)".into(),
        phase: phase.into(),
        checks: vec![SmokeCheck {
            check: "exists".into(),
            passed: same,
            detail,
        }],
        passed: same,
        duration_ms: 0,
    }
}

fn verdict(reports: &[SmokeReport]) -> (StepStatus, String) {
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.routine.as_str())
        .collect();
    if failed.is_empty() {
        (
            StepStatus::Succeeded,
            format!("{} check(s) passed", reports.len()),
        )
    } else {
        (
            StepStatus::Failed,
            format!(
                "{} of {} failed: {}",
                failed.len(),
                reports.len(),
                failed.join(", ")
            ),
        )
    }
}
