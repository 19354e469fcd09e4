//! What a deploy does when SQL of the project (a smoke test call) ended or
//! left the agent's sealed transaction (`txn_seal`): it has already stopped
//! and sent ROLLBACK; here it finds out from the target's ledger whether
//! anything of the deploy was committed, restores when it was, and says
//! exactly that — never "the database is as it was" without having looked.

use pgrollout_shared::proto::{Outcome, StepStatus};

use super::failed::Failed;
use crate::jobs::context::{txn_seal, JobContext, JobFailure};
use crate::jobs::reversal::restore;
use crate::sql::{self, describe_error, TargetConnection};

pub(super) async fn after_deploy_escape(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    failed: Failed,
    why: &str,
) -> Failed {
    let escaped = txn_seal::escaped_message("a smoke test call", why);
    let recorded =
        sql::find_job_in_ledger(&conn.client, &ctx.target.ledger_schema, &ctx.job.id).await;
    // The SQLSTATE of what went wrong here (a failed restore, an unreadable
    // ledger), for the spans; the text says it in words.
    let mut sqlstate = None;
    let (status, verdict, routines) = match recorded {
        Ok(rows) if rows.is_empty() => (
            StepStatus::Succeeded,
            "the target's ledger holds no row of this job: nothing of this deploy was committed"
                .to_owned(),
            "rolled-back",
        ),
        Ok(rows) => match restore::restore_committed(ctx, conn).await {
            Ok(count) => (
                StepStatus::Failed,
                format!(
                    "the ledger shows this deploy committed ({} row(s)); the automatic rollback \
                     restored {count} routine(s) from the backup",
                    rows.len()
                ),
                "rolled-back",
            ),
            Err(failure) => {
                sqlstate = failure.sql_state().cloned();
                (
                    StepStatus::Failed,
                    format!(
                        "the ledger shows this deploy committed ({} row(s)) and the AUTOMATIC \
                         ROLLBACK FAILED: {} — restore from the backup by hand",
                        rows.len(),
                        failure.message()
                    ),
                    "failed",
                )
            }
        },
        Err(error) => {
            sqlstate = error.code().cloned();
            (
                StepStatus::Failed,
                format!(
                    "whether anything was committed is NOT KNOWN: the ledger cannot be read ({}); \
                 check the ledger for job {} and the backup",
                    describe_error(&error, None),
                    ctx.job.id
                ),
                "failed",
            )
        }
    };
    let message = format!("{escaped}; {verdict}");
    ctx.event_coded(
        "rollback",
        status,
        &message,
        0,
        Vec::new(),
        sqlstate.as_ref(),
    );
    let stopped_at = failed.failure.sql_state();
    Failed {
        failure: JobFailure::new(
            Outcome::DeployFailed,
            format!("{message} (stopped at: {})", failed.failure.message()),
        )
        .with_sql_state(sqlstate.as_ref().or(stopped_at)),
        smoke: failed.smoke,
        outcomes: failed
            .outcomes
            .into_iter()
            .map(|mut o| {
                o.status = routines.into();
                o
            })
            .collect(),
    }
}
