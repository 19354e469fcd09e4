//! How a deploy's transaction ends: rolled back (and what became of it when
//! a smoke call ended it), or committed and then checked on a fresh
//! connection, with the automatic restore of the backup if that check fails.

use pgrollout_shared::proto::{JobResult, Outcome, SmokeReport, StepStatus};
use pgrollout_shared::routine::Routine;

use super::failed::Failed;
use crate::backup::WrittenBackup;
use crate::jobs::context::{txn_seal, Finished, JobContext, JobFailure};
use crate::jobs::reversal::restore;
use crate::jobs::steps::preopen::PreOpened;
use crate::jobs::steps::smoke_step_across;
use crate::sql::TargetConnection;

/// Rolls back the deploy's transaction after `failed`, and says what became
/// of it.
pub async fn roll_back(ctx: &JobContext, conn: &mut TargetConnection, failed: Failed) -> Failed {
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

/// The post-commit smoke test on a connection opened now, and the automatic
/// restore if it fails.
pub async fn verify_after_commit(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    routines: &[Routine],
    written: &WrittenBackup,
    result: JobResult,
) -> Finished {
    let checked = AfterCommit {
        routines,
        oids: &[],
        written,
    };
    verify_after_commit_on(ctx, conn, checked, result, PreOpened::later()).await
}

/// What a committed deploy is checked against: its routines (with their
/// oids when known) and the backup an automatic rollback restores.
pub(super) struct AfterCommit<'a> {
    pub routines: &'a [Routine],
    pub oids: &'a [u32],
    pub written: &'a WrittenBackup,
}

/// The post-commit smoke test on `post_commit`, and the automatic restore if
/// it fails.
pub(super) async fn verify_after_commit_on(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    checked: AfterCommit<'_>,
    mut result: JobResult,
    post_commit: PreOpened,
) -> Finished {
    let AfterCommit {
        routines,
        oids,
        written,
    } = checked;
    if routines.is_empty() {
        return result.into();
    }
    let post = post_commit_smoke(ctx, routines, oids, post_commit).await;
    // The job's SQLSTATE: the check's that could not run, else the failed
    // restore's.
    let mut sqlstate = None;
    let why = match post {
        Ok(reports) if reports.iter().all(|r| r.passed) => {
            result.smoke.extend(reports);
            return result.into();
        }
        Ok(reports) => {
            result.smoke.extend(reports);
            "the post-commit smoke test failed".to_owned()
        }
        Err(failure) => {
            sqlstate = failure.sql_state().cloned();
            format!(
                "the post-commit smoke test could not run: {}",
                failure.message()
            )
        }
    };
    let restored = restore::restore_backup(ctx, conn, written).await;
    result.outcome = Outcome::SmokeFailed as i32;
    result.message = match restored {
        Ok(()) => {
            result
                .routines
                .iter_mut()
                .for_each(|o| o.status = "rolled-back".into());
            format!(
                "{why}; automatic rollback restored the backup {}",
                written.path.display()
            )
        }
        Err(failure) => {
            sqlstate = sqlstate.or_else(|| failure.sql_state().cloned());
            format!(
                "{why}; AUTOMATIC ROLLBACK FAILED: {} — the new version is live; restore from {} by hand",
                failure.message(),
                written.path.display()
            )
        }
    };
    Finished { result, sqlstate }
}

/// After COMMIT, on other connections than the deploy's (opened while the
/// transaction ran): the live definitions as any caller will see them, the
/// calls spread over the sessions, each inside a transaction that is rolled
/// back.
async fn post_commit_smoke(
    ctx: &JobContext,
    routines: &[Routine],
    oids: &[u32],
    post_commit: PreOpened,
) -> Result<Vec<SmokeReport>, JobFailure> {
    let mut sessions = match post_commit.take(ctx).await {
        Ok(sessions) => sessions,
        Err(error) => {
            // Its text is the connection error's chain, as for `connect`;
            // after COMMIT a failure is never a refusal.
            let mut failure = JobFailure::connect(error);
            failure.outcome = Outcome::DeployFailed;
            ctx.failed("post-commit-smoke", &failure, 0);
            return Err(failure);
        }
    };
    let begun: Result<(), JobFailure> =
        futures_util::future::join_all(sessions.iter().map(txn_seal::begin))
            .await
            .into_iter()
            .collect();
    let reports = match begun {
        Ok(()) => {
            smoke_step_across(
                ctx,
                &mut sessions,
                routines,
                oids,
                "post-commit-smoke",
                "post-commit",
            )
            .await
        }
        Err(failure) => Err(failure),
    };
    for session in &sessions {
        let _ = session.client.batch_execute("ROLLBACK").await;
    }
    reports
}
