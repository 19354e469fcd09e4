//! `pgrollout smoke`: the smoke tests alone, against the live definitions,
//! inside a transaction that is rolled back. Changes nothing. With an
//! `[approvals]` policy, only the smoke tests of the plan in force there
//! (`deployed_sql.rs`).

use pgrollout_shared::proto::{JobResult, Outcome, StepStatus};
use pgrollout_shared::routine::Routine;
use pgrollout_shared::signing::sources::SourcePlan;

use super::context::{failed_result, txn_seal, Finished, JobContext, JobFailure};
use super::deployed_sql;
use super::smoke::run_smoke_tests;
use super::steps;

pub async fn run(ctx: &JobContext, routines: &[Routine], sources: &[SourcePlan]) -> Finished {
    let claims = match deployed_sql::claims(ctx, "this smoke job", routines, sources) {
        Ok(claims) => claims,
        Err(refused) => return *refused,
    };
    let work = async {
        let mut conn = steps::connect(ctx).await?;
        txn_seal::begin(&conn).await?;
        // In the transaction the tests run in: what the ledger says is the
        // state they test.
        if let Some(claims) = &claims {
            let started = std::time::Instant::now();
            let confirmed = deployed_sql::confirm(ctx, &conn, claims, true).await;
            if !matches!(confirmed, Ok(Ok(()))) {
                let _ = conn.client.batch_execute("ROLLBACK").await;
            }
            if let Err(refusal) = confirmed? {
                return Ok(deployed_sql::refused(ctx, &refusal, started.elapsed()));
            }
        }
        ctx.event("smoke", StepStatus::Started, "", 0, Vec::new());
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
        ctx.smoke_event("smoke", status, "", 0, &reports);
        Ok::<_, JobFailure>(Finished::from(JobResult {
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
        }))
    };
    work.await
        .unwrap_or_else(|failure| failed_result(failure, Vec::new()))
}
