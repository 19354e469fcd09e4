//! `pgrollout retire` on the agent (issue 15). A retire plan takes the deploy
//! path — connect, lock, idempotency, BEGIN, the verified backup of the live
//! definitions (owner, ACL, comment and SET options included) — and then, in
//! place of the CREATEs, drops each routine: refused, naming them, when
//! anything depends on it (`pg_depend`: views, `BEGIN ATOMIC` bodies,
//! triggers, defaults). The ledger gets a `retired` row per routine with the
//! reason as its note; its previous side is what a rollback restores, from
//! the backup, exactly as it undoes any other change.

use pgrollout_shared::proto::{AppliedRoutine, JobResult, Outcome};
use pgrollout_shared::routine::Routine;

use super::failed::{outcomes_all, Failed};
use super::finish::roll_back;
use crate::jobs::context::{txn_seal, JobContext, JobFailure};
use crate::jobs::steps::apply::{self, Before};
use crate::jobs::steps::refused;
use crate::sql::recreate::{drop_for_recreate, RecreateError};
use crate::sql::retire::note_rows;
use crate::sql::TargetConnection;

/// Runs a retire plan in one transaction, after the deploy path's lock and
/// idempotency check.
pub(super) async fn run(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    routines: &[Routine],
) -> Result<JobResult, Failed> {
    txn_seal::begin(conn).await?;
    let (before, applied, ledger_ids) = match in_transaction(ctx, conn, routines).await {
        Ok(done) => done,
        Err(failure) => {
            let failed = Failed {
                failure,
                smoke: Vec::new(),
                outcomes: outcomes_all(routines, "rolled-back"),
            };
            return Err(roll_back(ctx, conn, failed).await);
        }
    };
    ctx.step("commit", ctx.commit(conn, true), |_| "committed".into())
        .await
        .map_err(|failure| Failed {
            failure,
            smoke: Vec::new(),
            outcomes: outcomes_all(routines, "not-run"),
        })?;
    let (backup_path, backup_sha256) = before.backup_fields();
    Ok(JobResult {
        outcome: Outcome::Succeeded as i32,
        message: format!(
            "{} routine(s) retired; the backup {backup_path} holds their definitions and `pgrollout rollback` \
             restores them",
            routines.len()
        ),
        backup_path,
        backup_sha256,
        ledger_ids,
        applied,
        routines: outcomes_all(routines, "retired"),
        ..Default::default()
    })
}

/// Backup, DROP, ledger: everything between BEGIN and COMMIT. Any `Err`
/// means the caller rolls back.
async fn in_transaction(
    ctx: &JobContext,
    conn: &mut TargetConnection,
    routines: &[Routine],
) -> Result<(Before, Vec<AppliedRoutine>, Vec<i64>), JobFailure> {
    let before = ctx
        .step(
            "backup",
            apply::take_backup(ctx, conn, routines),
            Before::describe,
        )
        .await?;
    let identities: Vec<String> = before
        .previous
        .iter()
        .filter_map(|s| s.identity.clone())
        .collect();
    ctx.step("retire", drop_all(conn, &identities), |()| {
        format!("dropped {}", identities.join(", "))
    })
    .await?;
    let (applied, ids) = ctx
        .step(
            "ledger",
            async {
                let (applied, ids) = apply::record(ctx, conn, routines, &[], &before).await?;
                let notes: Vec<String> = routines
                    .iter()
                    .map(|r| r.retire.as_ref().map(|r| format!("retired: {}", r.reason)))
                    .map(Option::unwrap_or_default)
                    .collect();
                note_rows(&conn.client, &ctx.target.ledger_schema, &ids, &notes)
                    .await
                    .map_err(|e| JobFailure::database("ledger write failed", e))?;
                Ok((applied, ids))
            },
            |(_, ids)| format!("{} ledger row(s) written, retired", ids.len()),
        )
        .await?;
    Ok((before, applied, ids))
}

async fn drop_all(conn: &TargetConnection, identities: &[String]) -> Result<(), JobFailure> {
    drop_for_recreate(&conn.client, identities)
        .await
        .map_err(|error| match error {
            RecreateError::Dependants(found) => {
                let each: Vec<String> = found
                    .0
                    .iter()
                    .map(|(identity, on)| format!("{identity} is used by {}", on.join(", ")))
                    .collect();
                refused(format!(
                    "cannot retire: {}; dropping it would break them — change or drop those first; nothing was \
                     changed",
                    each.join("; ")
                ))
            }
            RecreateError::Database(e) => JobFailure::database("dropping failed", e),
        })
}
