//! `pgrollout smoke`: the smoke tests alone, against the live definitions,
//! inside a transaction that is rolled back. Changes nothing.

use pgrollout_shared::proto::{JobResult, Outcome, StepStatus};
use pgrollout_shared::routine::Routine;

use super::context::{failed_result, txn_seal, Finished, JobContext, JobFailure};
use super::smoke::run_smoke_tests;
use super::steps;

pub async fn run(ctx: &JobContext, routines: &[Routine]) -> Finished {
    let work = async {
        let mut conn = steps::connect(ctx).await?;
        ctx.event("smoke", StepStatus::Started, "", 0, Vec::new());
        txn_seal::begin(&conn).await?;
        let ran = run_smoke_tests(&mut conn, routines, "standalone").await;
        let sealed = txn_seal::confirm(&conn).await;
        let _ = conn.client.batch_execute("ROLLBACK").await;
        if let Err(why) = sealed {
            return Err(JobFailure::deploy(txn_seal::escaped_message(
                "a smoke test call",
                &why,
            )));
        }
        let reports = ran.map_err(|e| JobFailure::database("", e))?;
        let passed = reports.iter().all(|r| r.passed);
        let status = if passed {
            StepStatus::Succeeded
        } else {
            StepStatus::Failed
        };
        ctx.event("smoke", status, "", 0, reports.clone());
        Ok::<_, JobFailure>(JobResult {
            outcome: if passed {
                Outcome::Succeeded
            } else {
                Outcome::SmokeFailed
            } as i32,
            message: if passed {
                "all smoke tests passed".into()
            } else {
                "smoke test failed".into()
            },
            smoke: reports,
            ..Default::default()
        })
    };
    work.await
        .map_or_else(|failure| failed_result(failure, Vec::new()), Finished::from)
}
