//! The smoke step, once for every job that verifies routines inside its
//! transaction: a deploy, a batch routine, the post-commit check, a retire.

use std::time::Instant;

use pgrollout_shared::proto::{SmokeReport, StepStatus};
use pgrollout_shared::routine::Routine;

use super::apply::smoke_summary;
use crate::jobs::context::{millis, txn_seal, JobContext, JobFailure};
use crate::jobs::smoke::{run_smoke_tests_at, Counted};
use crate::sql::TargetConnection;

/// Runs the smoke tests of `routines` as one step and reports them. `oids`
/// holds the routines' oids when they are known (or is empty).
pub async fn smoke_step(
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
    // A bar on the operator's terminal for the calls too: on a large batch
    // they take seconds (issue 16).
    let ran = run_smoke_tests_at(conn, routines, oids, phase, Counted::Not, |done, total| {
        ctx.progress(step, done, total)
    })
    .await;
    // The calls are the project's SQL: is the transaction still the agent's?
    if let Err(why) = txn_seal::confirm_after_calls(conn).await {
        let failure = JobFailure::deploy(txn_seal::escaped_message("a smoke test call", &why));
        ctx.failed(step, &failure, millis(started.elapsed()));
        return Err(failure);
    }
    let reports = ran.map_err(|e| JobFailure::database("smoke test could not run", e))?;
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
        millis(started.elapsed()),
        reports.clone(),
    );
    Ok(reports)
}
