//! The `perf_probe` job (`pgrollout perf`): connect, take the deploy lock,
//! time each routine's `[perf]` call on the old and the new definition
//! (`steps/perf.rs`); nothing is changed.

use pgrollout_shared::perf_target::PerfTarget;
use pgrollout_shared::proto::{JobResult, Outcome};
use pgrollout_shared::routine::Routine;
use pgrollout_shared::test_reports::perf_line;

use super::context::{failed_result, Finished, JobContext, JobFailure};
use super::steps::{self, perf};

/// The `perf_probe` job: connect, take the deploy lock, measure.
pub async fn run(ctx: &JobContext, routines: &[Routine], targets: &[PerfTarget]) -> Finished {
    let work = async {
        let conn = steps::connect(ctx).await?;
        steps::lock(ctx, &conn).await?;
        let reports = perf::probe_step(ctx, &conn, routines, targets).await?;
        let failed: Vec<String> = reports
            .iter()
            .filter(|r| !r.error.is_empty())
            .map(perf_line)
            .collect();
        Ok::<_, JobFailure>(JobResult {
            outcome: if failed.is_empty() {
                Outcome::Succeeded
            } else {
                Outcome::DeployFailed
            } as i32,
            message: if failed.is_empty() {
                format!(
                    "{} probe(s) measured on the old and the new definition; nothing was changed",
                    reports.len()
                )
            } else {
                format!("probe failed, nothing was changed: {}", failed.join("; "))
            },
            perf: reports,
            ..Default::default()
        })
    };
    work.await
        .map_or_else(|failure| failed_result(failure, Vec::new()), Finished::from)
}
